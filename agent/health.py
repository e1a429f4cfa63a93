"""Health samples: cheap, frequent load figures for the time series (no subprocesses).

``HealthSampler`` keeps the previous network counters to turn them into bytes/s; the caller
passes ``now`` (seconds since the epoch) so rates and timestamps are testable.

A sample must fit ``limits.MAX_HEALTH_METRICS_BYTES`` or the server refuses it. A host with
hundreds of mounts (containers, snaps) passes that on disks alone, so disks are listed most
relevant first (``/``, nearly full ones, then by size) and :func:`fit_metrics` keeps the longest
prefix that fits, dropping whole optional entries (sensors) only if that is not enough, and says
what it left out in ``truncated``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import msgspec
import psutil

from agent.collectors._util import iso_utc
from agent.collectors.hardware import storage_partitions
from protocol import limits

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


#: Free space (%) under which a disk counts as nearly full: listed before the roomy ones (the server's
#: disk alert starts at 10 %).
NEARLY_FULL_PERCENT = 15.0
#: Metrics never dropped to fit the size limit (numbers and the timestamp: a few hundred bytes).
CORE_METRICS = frozenset({"ts", "cpu_percent", "load1", "load5", "load15", "mem_percent", "swap_percent",
                          "battery_percent", "uptime_s", "net_rx_bps", "net_tx_bps", "disks", "delivery"})


class DiskUsage(NamedTuple):
    mountpoint: str
    total_bytes: int
    free_percent: float


def rank_disks(disks: Iterable[DiskUsage]) -> dict[str, float]:
    """Mount point → free %, most relevant first: ``/``, then nearly full disks (fullest first), then by size."""
    def relevance(d: DiskUsage) -> tuple[int, float, int]:
        if d.mountpoint == "/":
            return (0, 0.0, 0)
        if d.free_percent < NEARLY_FULL_PERCENT:
            return (1, d.free_percent, -d.total_bytes)
        return (2, 0.0, -d.total_bytes)

    return {d.mountpoint: d.free_percent for d in sorted(disks, key=relevance)}


def _disk_free_percent() -> dict[str, float]:
    found: list[DiskUsage] = []
    for part in storage_partitions():
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError as exc:
            log.debug("disk_usage(%s) failed: %s", part.mountpoint, exc)
            continue
        if usage.total:
            found.append(DiskUsage(part.mountpoint, usage.total, round(100.0 * usage.free / usage.total, 1)))
    return rank_disks(found)


_encode = msgspec.json.Encoder().encode


def _urgency(item: tuple[Any, Any]) -> int:
    """Sort key (stable) putting ``/`` first, then nearly full disks, keeping the given order otherwise."""
    mountpoint, free = item
    if mountpoint == "/":
        return 0
    return 1 if isinstance(free, int | float) and free < NEARLY_FULL_PERCENT else 2


def metrics_size(metrics: Mapping[str, Any]) -> int:
    """Bytes of the metrics as compact JSON: what the server measures against the limit."""
    return len(_encode(metrics))


def fit_metrics(metrics: Mapping[str, Any], limit: int = limits.MAX_HEALTH_METRICS_BYTES) -> dict[str, Any]:
    """``metrics`` itself when it fits ``limit``; otherwise a copy trimmed to fit, marked ``truncated``.

    Keeps the longest prefix of ``disks`` — listed most relevant first by :func:`rank_disks`; ``/``
    and nearly full disks are moved to the front here too (a sample stored by an older agent) — and
    drops optional entries, largest first, only when no disk at all would fit. ``truncated`` says how
    many disks and which entries were left out.
    """
    if metrics_size(metrics) <= limit:
        return dict(metrics)
    base = {k: v for k, v in metrics.items() if k != "truncated"}
    disks = base.get("disks")
    disk_items = sorted(disks.items(), key=_urgency) if isinstance(disks, dict) else []
    dropped_keys: list[str] = []

    def build(keep: int) -> dict[str, Any]:
        out = dict(base)
        marker: dict[str, Any] = {}
        if isinstance(disks, dict):
            out["disks"] = dict(disk_items[:keep])
            if keep < len(disk_items):
                marker["disks_dropped"] = len(disk_items) - keep
        if dropped_keys:
            marker["dropped"] = list(dropped_keys)
        out["truncated"] = marker
        return out

    droppable = [k for k in base if k not in CORE_METRICS or (k == "disks" and not isinstance(disks, dict))]
    optional = sorted(droppable, key=lambda k: -metrics_size({k: base[k]}))
    while metrics_size(build(0)) > limit and optional:
        key = optional.pop(0)
        del base[key]
        dropped_keys.append(key)
    if metrics_size(build(0)) > limit:  # even the core is too large (a hostile or broken sample): keep nothing
        return {"truncated": {"dropped": sorted(metrics)[:32]}}
    low, high = 0, len(disk_items)  # the most disks that fit: build(low) fits
    while low < high:
        mid = (low + high + 1) // 2
        if metrics_size(build(mid)) <= limit:
            low = mid
        else:
            high = mid - 1
    return build(low)


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
