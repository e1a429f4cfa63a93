"""Health samples: cheap, frequent load figures for the time series (no subprocesses).

``HealthSampler`` keeps the previous network counters to turn them into bytes/s; the caller
passes ``now`` (seconds since the epoch) so rates and timestamps are testable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import psutil

from agent.collectors._util import iso_utc
from agent.collectors.hardware import storage_partitions

log = logging.getLogger(__name__)


class NetCounters(NamedTuple):
    """Total bytes received and sent on all interfaces."""

    rx_bytes: int
    tx_bytes: int


def psutil_net_counters() -> NetCounters | None:
    """System-wide byte counters, None where psutil has none."""
    counters = psutil.net_io_counters(pernic=False)
    if counters is None:
        return None
    return NetCounters(counters.bytes_recv, counters.bytes_sent)


def _disk_free_percent() -> dict[str, float]:
    free: dict[str, float] = {}
    for part in storage_partitions():
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError as exc:
            log.debug("disk_usage(%s) failed: %s", part.mountpoint, exc)
            continue
        if usage.total:
            free[part.mountpoint] = round(100.0 * usage.free / usage.total, 1)
    return free


def _temperatures() -> dict[str, list[dict[str, Any]]]:
    sensors = getattr(psutil, "sensors_temperatures", None)
    if sensors is None:
        return {}
    try:
        readings = sensors()
    except (OSError, RuntimeError) as exc:
        log.debug("sensors_temperatures failed: %s", exc)
        return {}
    return {
        chip: [{"label": r.label or None, "current_c": r.current} for r in entries]
        for chip, entries in readings.items()
    }


class HealthSampler:
    """Produce health samples; keeps the last counters so network rates cover the interval between samples."""

    def __init__(self, *, net_counters: Callable[[], NetCounters | None] = psutil_net_counters) -> None:
        self._net_counters = net_counters
        self._last_net: tuple[float, NetCounters] | None = None
        psutil.cpu_percent(interval=None)  # prime: the first reading covers the time since this call

    def _net_rates(self, now: float) -> tuple[float | None, float | None]:
        counters = self._net_counters()
        previous, self._last_net = self._last_net, (now, counters) if counters is not None else None
        if counters is None or previous is None:
            return None, None
        elapsed = now - previous[0]
        if elapsed <= 0:
            return None, None
        rx = counters.rx_bytes - previous[1].rx_bytes
        tx = counters.tx_bytes - previous[1].tx_bytes
        if rx < 0 or tx < 0:  # counters reset (interface gone, wrap): no honest rate for this interval
            return None, None
        return round(rx / elapsed, 1), round(tx / elapsed, 1)

    def sample(self, now: float) -> dict[str, Any]:
        """One sample at ``now``; net rates are None on the first call or after a counter reset."""
        load1: float | None
        load5: float | None
        load15: float | None
        try:
            load1, load5, load15 = psutil.getloadavg()
        except OSError as exc:
            log.debug("getloadavg failed: %s", exc)
            load1 = load5 = load15 = None
        battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
        rx_bps, tx_bps = self._net_rates(now)
        return {
            "ts": iso_utc(now),
            "cpu_percent": psutil.cpu_percent(interval=None),
            "load1": load1,
            "load5": load5,
            "load15": load15,
            "mem_percent": psutil.virtual_memory().percent,
            "swap_percent": psutil.swap_memory().percent,
            "disks": _disk_free_percent(),
            "temperatures": _temperatures(),
            "battery_percent": round(battery.percent, 1) if battery is not None else None,
            "uptime_s": max(0, int(now - psutil.boot_time())),
            "net_rx_bps": rx_bps,
            "net_tx_bps": tx_bps,
        }
