"""What the agent already knows that a technician wants to see first, as a short list.

Computed when the Get help window opens (and again when the request is sent): disks nearly full,
memory under pressure, no default route (no network), a reboot the system is waiting for. Each
check is cheap (statfs, /proc) and its inputs are injectable (:class:`Probe`), so tests need no
full disk. A check that cannot run is left out rather than guessed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from protocol.requests import MAX_DIAGNOSTICS, Diagnostic

log = logging.getLogger(__name__)

#: A filesystem this full (per cent used) is "nearly full".
DISK_WARN_PERCENT = 90.0
#: Memory this full (per cent used, psutil's "available" view) is "high".
MEMORY_WARN_PERCENT = 90.0
REBOOT_REQUIRED = Path("/var/run/reboot-required")
ROUTES_V4 = Path("/proc/net/route")
ROUTES_V6 = Path("/proc/net/ipv6_route")


def _disks() -> list[tuple[str, float, int]]:
    """(mount point, per cent used, bytes free) of each local, real filesystem."""
    import psutil

    found = []
    for part in psutil.disk_partitions(all=False):
        if part.fstype in ("squashfs", "tmpfs", "devtmpfs", "overlay") or part.mountpoint.startswith("/snap"):
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        found.append((part.mountpoint, float(usage.percent), int(usage.free)))
    return found


def _memory() -> float:
    import psutil

    return float(psutil.virtual_memory().percent)


def has_default_route(v4: Path = ROUTES_V4, v6: Path = ROUTES_V6) -> bool | None:
    """True/False from the kernel's routing tables; None when neither can be read."""
    readable = False
    with contextlib.suppress(OSError):  # no IPv4 routing table (an IPv6-only kernel): the IPv6 one decides
        lines = v4.read_text().splitlines()[1:]
        readable = True
        if any(len(f := line.split()) > 2 and f[1] == "00000000" and f[0] != "lo" for line in lines):
            return True
    with contextlib.suppress(OSError):  # no IPv6 routing table: the IPv4 one decided
        for line in v6.read_text().splitlines():
            readable = True
            fields = line.split()
            if len(fields) >= 10 and fields[0] == "0" * 32 and fields[1] == "00" and fields[9] != "lo":
                return True
    return False if readable else None


@dataclass
class Probe:
    """The inputs of the checks (each a seam for tests)."""

    disks: Callable[[], list[tuple[str, float, int]]] = _disks
    memory: Callable[[], float] = _memory
    default_route: Callable[[], bool | None] = has_default_route
    reboot_flag: Path = REBOOT_REQUIRED
    extra: list[Diagnostic] = field(default_factory=list)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def collect(probe: Probe | None = None) -> list[Diagnostic]:
    """The findings, most serious first (at most :data:`MAX_DIAGNOSTICS`)."""
    probe = probe or Probe()
    found: list[Diagnostic] = []
    try:
        for mount, percent, free in probe.disks():
            if percent >= DISK_WARN_PERCENT:
                severity = "critical" if percent >= 98 else "warning"
                found.append(Diagnostic("disk_full", severity,
                                        f"disk {mount[:100]} is {percent:.0f}% full ({_gib(free)} free)"))
    except Exception:
        log.warning("disk check failed", exc_info=True)
    try:
        memory = probe.memory()
        if memory >= MEMORY_WARN_PERCENT:
            found.append(Diagnostic("memory_high", "warning", f"memory is {memory:.0f}% used"))
    except Exception:
        log.warning("memory check failed", exc_info=True)
    route = probe.default_route()
    if route is False:
        found.append(Diagnostic("no_network", "critical", "no network: this computer has no default route"))
    try:
        if probe.reboot_flag.exists():
            found.append(Diagnostic("reboot_pending", "warning", "a restart is pending to finish installing updates"))
    except OSError as exc:
        log.warning("reboot check failed: %s", exc)
    found.extend(probe.extra)
    order = {"critical": 0, "warning": 1}
    found.sort(key=lambda d: order.get(d.severity, 2))
    return found[:MAX_DIAGNOSTICS]
