"""Hardware: CPU, memory, disk partitions, battery and displays.

Only configuration goes here (sizes, models, capacities); fast-moving load figures belong
to agent.health. Free disk space and battery charge are included because the CMDB shows
them, which makes those two sections change more often than the others.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import psutil

from agent.collectors._util import read_text

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
POWER_SUPPLY = Path("/sys/class/power_supply")
# Real filesystems psutil may still list that say nothing about storage a user can fill.
SKIPPED_FSTYPES = frozenset({"squashfs", "erofs", "iso9660", "udf"})
_CPU_MODEL_KEYS = ("model name", "Model", "Hardware", "cpu model", "cpu")


def parse_cpu_model(cpuinfo: str) -> str | None:
    """First processor model name in /proc/cpuinfo (x86 "model name", ARM "Model"/"Hardware")."""
    found: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key in _CPU_MODEL_KEYS and key not in found and value.strip():
            found[key] = value.strip()
    for key in _CPU_MODEL_KEYS:
        if key in found:
            return found[key]
    return None


#: /proc/cpuinfo keys of the first processor → cpu section fields (x86; ARM names differ).
_CPU_IDENTITY = {"vendor_id": "vendor", "cpu family": "family", "model": "model_number", "stepping": "stepping",
                 "microcode": "microcode", "CPU implementer": "vendor", "CPU architecture": "family",
                 "CPU part": "model_number", "CPU variant": "stepping"}
_CPU_INTEGERS = ("family", "model_number", "stepping")


def parse_cpu_identity(cpuinfo: str) -> dict[str, Any]:
    """Vendor, family, model number, stepping and microcode of the first processor block.

    Family/model/stepping are decimal on x86 (``cpu family : 25``) and hex on ARM
    (``CPU part : 0xd0c``); both become integers. Microcode stays the kernel's hex string.
    """
    identity: dict[str, Any] = dict.fromkeys(("vendor", "family", "model_number", "stepping", "microcode"))
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        field = _CPU_IDENTITY.get(key.strip())
        value = value.strip()
        if not sep or field is None or not value or identity[field] is not None:
            continue
        if field in _CPU_INTEGERS:
            try:
                identity[field] = int(value, 16) if value.lower().startswith("0x") else int(value)
            except ValueError:
                continue
        else:
            identity[field] = value
    return identity


def collect_cpu(cpuinfo_path: Path = CPUINFO) -> dict[str, Any]:
    """CPU model, identity (vendor/family/model/stepping/microcode), cores and frequency in MHz."""
    unavailable: dict[str, str] = {}
    text, reason = read_text(cpuinfo_path)
    model = parse_cpu_model(text) if text else None
    if model is None:
        unavailable["model"] = reason or f"no model name in {cpuinfo_path}"
    identity = parse_cpu_identity(text or "")
    for field, value in identity.items():
        if value is None:
            unavailable[field] = reason or f"no {field} in {cpuinfo_path}"
    physical = psutil.cpu_count(logical=False)
    if physical is None:
        unavailable["physical_cores"] = "psutil could not determine physical cores"
    logical = psutil.cpu_count(logical=True)
    if logical is None:
        unavailable["logical_cores"] = "psutil could not determine logical cores"
    freq_mhz: int | None = None
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError) as exc:
        freq = None
        unavailable["freq_mhz"] = f"psutil.cpu_freq failed: {exc}"
    if freq is not None:
        freq_mhz = round(freq.max) if freq.max > 0 else (round(freq.current) if freq.current > 0 else None)
    if freq_mhz is None and "freq_mhz" not in unavailable:
        unavailable["freq_mhz"] = "no cpufreq data from the OS"
    return {
        "model": model,
        **identity,
        "physical_cores": physical,
        "logical_cores": logical,
        "freq_mhz": freq_mhz,
        "unavailable": unavailable,
    }


def collect_memory() -> dict[str, Any]:
    """Total RAM and swap in bytes."""
    return {
        "total_bytes": psutil.virtual_memory().total,
        "swap_total_bytes": psutil.swap_memory().total,
        "unavailable": {},
    }


def storage_partitions() -> list[Any]:
    """Partitions worth reporting: psutil's physical ones minus read-only image filesystems, one per mountpoint."""
    seen: set[str] = set()
    parts = []
    for part in psutil.disk_partitions(all=False):
        if part.fstype in SKIPPED_FSTYPES or part.mountpoint in seen:
            continue
        seen.add(part.mountpoint)
        parts.append(part)
    return parts


def collect_disks() -> dict[str, Any]:
    """Mounted partitions with size and free bytes; pseudo filesystems are skipped."""
    unavailable: dict[str, str] = {}
    partitions: list[dict[str, Any]] = []
    for part in storage_partitions():
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError as exc:
            unavailable[part.mountpoint] = f"statvfs failed: {exc.strerror or exc}"
            total: int | None = None
            free: int | None = None
        else:
            total, free = usage.total, usage.free
        partitions.append(
            {
                "device": part.device,
                "mountpoint": part.mountpoint,
                "fstype": part.fstype,
                "total_bytes": total,
                "free_bytes": free,
            }
        )
    partitions.sort(key=lambda p: p["mountpoint"])
    return {"partitions": partitions, "unavailable": unavailable}


def _read_int(path: Path) -> int | None:
    value, _reason = read_text(path)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def collect_battery(power_supply: Path = POWER_SUPPLY) -> dict[str, Any] | None:
    """First battery's charge, plug state and wear; ``None`` when the machine has no battery."""
    batteries = sorted(power_supply.glob("BAT*")) if power_supply.is_dir() else []
    if not batteries:
        return None
    bat = batteries[0]
    unavailable: dict[str, str] = {}
    try:
        sensor = psutil.sensors_battery()
    except (OSError, RuntimeError) as exc:
        log.warning("psutil.sensors_battery failed: %s", exc)
        sensor = None
    percent: float | None = round(sensor.percent, 1) if sensor is not None else None
    plugged = sensor.power_plugged if sensor is not None else None
    if sensor is None:
        unavailable["percent"] = unavailable["plugged"] = "psutil reports no battery sensor"
    full = _read_int(bat / "energy_full")
    design = _read_int(bat / "energy_full_design")
    health: float | None = None
    if full is not None and design:
        health = round(100.0 * full / design, 1)
    else:
        unavailable["health_percent"] = f"{bat}/energy_full or energy_full_design missing"
    texts = {}
    for field, name in (
        ("manufacturer", "manufacturer"),
        ("model", "model_name"),
        ("serial", "serial_number"),
        ("chemistry", "technology"),
    ):
        texts[field], reason = read_text(bat / name)
        if reason:
            unavailable[field] = reason
    return {
        "name": bat.name,
        "percent": percent,
        "plugged": plugged,
        "health_percent": health,
        "design_capacity_mwh": design // 1000 if design is not None else None,
        "full_capacity_mwh": full // 1000 if full is not None else None,
        **texts,
        "unavailable": unavailable,
    }


def collect_displays() -> dict[str, Any]:
    """Monitors as mss sees them (index 1.. as in mss; index 0, the union, is left out)."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        return {"monitors": [], "unavailable": {"monitors": "no X display ($DISPLAY unset)"}}
    import mss  # imported late: loading the X libraries is wasted work without a display
    import mss.exception

    try:
        with mss.MSS() as grabber:
            monitors = [
                {"index": i, "width": m["width"], "height": m["height"], "left": m["left"], "top": m["top"]}
                for i, m in enumerate(grabber.monitors)
                if i > 0
            ]
    except mss.exception.ScreenShotError as exc:
        log.info("mss cannot list monitors: %s", exc)
        return {"monitors": [], "unavailable": {"monitors": f"mss: {exc}"}}
    return {"monitors": monitors, "unavailable": {}}
