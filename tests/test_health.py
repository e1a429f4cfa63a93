"""Health samples: fields, network rates from injected counters and clock, and no subprocesses."""

from __future__ import annotations

import subprocess
import time

import psutil
import pytest

from agent.health import HealthSampler, NetCounters


class FakeCounters:
    """Network counters a test advances by hand."""

    def __init__(self) -> None:
        self.value: NetCounters | None = NetCounters(1_000, 500)

    def __call__(self) -> NetCounters | None:
        return self.value


def test_sample_fields_match_psutil() -> None:
    """A sample has every documented field with values consistent with psutil."""
    sampler = HealthSampler()
    now = time.time()
    s = sampler.sample(now)
    assert set(s) == {
        "ts", "cpu_percent", "load1", "load5", "load15", "mem_percent", "swap_percent", "disks",
        "temperatures", "battery_percent", "uptime_s", "net_rx_bps", "net_tx_bps",
    }  # fmt: skip
    assert s["ts"].endswith("Z") and 0.0 <= s["cpu_percent"] <= 100.0
    assert s["load1"] == pytest.approx(psutil.getloadavg()[0], abs=1.0)
    assert "/" in s["disks"] and 0.0 <= s["disks"]["/"] <= 100.0
    assert abs(s["uptime_s"] - (now - psutil.boot_time())) <= 1
    assert s["battery_percent"] is None or 0 <= s["battery_percent"] <= 100
    assert isinstance(s["temperatures"], dict)


def test_net_rates_from_counter_deltas() -> None:
    """Rates are byte deltas over the injected clock's interval; none on the first sample."""
    counters = FakeCounters()
    sampler = HealthSampler(net_counters=counters)
    first = sampler.sample(1000.0)
    assert (first["net_rx_bps"], first["net_tx_bps"]) == (None, None)
    assert first["ts"] == "1970-01-01T00:16:40Z"
    counters.value = NetCounters(21_000, 2_500)
    second = sampler.sample(1010.0)
    assert (second["net_rx_bps"], second["net_tx_bps"]) == (2000.0, 200.0)


def test_counter_reset_gives_no_rate() -> None:
    """A counter going backwards (interface removed) yields None rather than a negative rate."""
    counters = FakeCounters()
    sampler = HealthSampler(net_counters=counters)
    sampler.sample(0.0)
    counters.value = NetCounters(10, 10)
    assert sampler.sample(5.0)["net_rx_bps"] is None
    counters.value = NetCounters(60, 20)
    assert sampler.sample(10.0)["net_rx_bps"] == 10.0


def test_sample_spawns_no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sampling is cheap: it never starts a subprocess."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("subprocess started during a health sample")

    monkeypatch.setattr(subprocess.Popen, "__init__", forbidden)
    HealthSampler().sample(time.time())
