"""Physical storage devices: name, size, model, vendor, serial, kind, transport, SMART health.

``disks`` reports mounted volumes; this reports the drives under them, as GLPI's ``STORAGES``
does. lsblk (util-linux) is asked first because it reads udev's serial and transport; without
it the same fields come from /sys/block. Virtual block devices (loop, zram, ram, device-mapper,
md) are not drives and are left out. SMART health comes from ``smartctl -H -j`` where
smartmontools is installed; a drive that has no SMART (virtio, most USB bridges) says so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from agent.collectors._util import read_text, run_command

log = logging.getLogger(__name__)

SYS_BLOCK = Path("/sys/block")
LSBLK_COLUMNS = "NAME,PATH,SIZE,MODEL,VENDOR,SERIAL,TYPE,TRAN,ROTA,RM,REV,WWN"
#: Kernel block devices that are not drives.
VIRTUAL_PREFIXES = ("loop", "zram", "ram", "dm-", "md", "nbd", "sr")
MAX_DEVICES = 256


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _kind(name: str, transport: str | None, rotational: bool | None) -> str:
    """``nvme``, ``virtual`` (virtio/Xen), ``ssd`` or ``hdd`` (rotational), else ``disk``."""
    if name.startswith(("vd", "xvd")):
        return "virtual"  # paravirtual disks: the kernel calls them rotational, which says nothing
    if name.startswith("nvme") or transport == "nvme":
        return "nvme"
    if rotational is False:
        return "ssd"
    if rotational is True:
        return "hdd"
    return "disk"


def _is_virtual(name: str) -> bool:
    return name.startswith(VIRTUAL_PREFIXES)


def _bool(value: Any) -> bool | None:
    """lsblk prints ROTA/RM as JSON booleans (util-linux ≥ 2.33) or as "0"/"1" strings (older)."""
    if isinstance(value, bool):
        return value
    if value in ("0", "1", 0, 1):
        return str(value) == "1"
    return None


def parse_lsblk(text: str) -> list[dict[str, Any]]:
    """Drives from ``lsblk -J -b -d -o LSBLK_COLUMNS``: whole disks only, virtual ones left out."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        log.warning("lsblk output is not JSON: %s", exc)
        return []
    devices = doc.get("blockdevices") if isinstance(doc, dict) else None
    drives = []
    for dev in devices if isinstance(devices, list) else []:
        if not isinstance(dev, dict) or dev.get("type") != "disk":
            continue
        name = _text(dev.get("name"))
        if name is None or _is_virtual(name):
            continue
        transport = _text(dev.get("tran"))
        rotational = _bool(dev.get("rota"))
        size = dev.get("size")
        drives.append({
            "name": name,
            "path": _text(dev.get("path")) or f"/dev/{name}",
            "size_bytes": int(size) if isinstance(size, int | str) and str(size).isdigit() else None,
            "model": _text(dev.get("model")),
            "vendor": _text(dev.get("vendor")),
            "serial": _text(dev.get("serial")),
            "firmware": _text(dev.get("rev")),
            "wwn": _text(dev.get("wwn")),
            "transport": transport,
            "rotational": rotational,
            "removable": _bool(dev.get("rm")),
            "kind": _kind(name, transport, rotational),
        })
    return drives[:MAX_DEVICES]


def sysfs_drives(sys_block: Path = SYS_BLOCK) -> list[dict[str, Any]]:
    """The same drives from /sys/block when lsblk is missing (no udev serial or transport there)."""
    drives = []
    for entry in sorted(sys_block.iterdir()) if sys_block.is_dir() else []:
        name = entry.name
        if _is_virtual(name):
            continue
        sectors, _ = read_text(entry / "size")
        rota, _ = read_text(entry / "queue" / "rotational")
        removable, _ = read_text(entry / "removable")
        rotational = _bool(rota)
        serial = read_text(entry / "device" / "serial")[0] or read_text(entry / "serial")[0]
        drives.append({
            "name": name,
            "path": f"/dev/{name}",
            "size_bytes": int(sectors) * 512 if sectors and sectors.isdigit() else None,  # always 512-byte units
            "model": read_text(entry / "device" / "model")[0],
            "vendor": read_text(entry / "device" / "vendor")[0],
            "serial": serial,
            "firmware": read_text(entry / "device" / "rev")[0] or read_text(entry / "device" / "firmware_rev")[0],
            "wwn": read_text(entry / "wwid")[0],
            "transport": "nvme" if name.startswith("nvme") else None,
            "rotational": rotational,
            "removable": _bool(removable),
            "kind": _kind(name, None, rotational),
        })
    return drives[:MAX_DEVICES]


def parse_smartctl_health(text: str) -> tuple[bool | None, str | None]:
    """``smartctl -H -j DEV`` → (passed, None), or (None, why there is no verdict)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None, "smartctl output is not JSON"
    if not isinstance(doc, dict):
        return None, "smartctl output is not a JSON object"
    status = doc.get("smart_status")
    if isinstance(status, dict) and isinstance(status.get("passed"), bool):
        return status["passed"], None
    messages = (doc.get("smartctl") or {}).get("messages") if isinstance(doc.get("smartctl"), dict) else None
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and isinstance(message.get("string"), str):
            return None, f"smartctl: {message['string'][:200]}"
    return None, "smartctl reported no SMART status"


def smart_health(path: str) -> tuple[str | None, str | None]:
    """``"PASSED"``/``"FAILED"`` for the drive at ``path``, or (None, reason)."""
    # smartctl's exit status is a bit mask (bit 3: disk failing); the JSON carries the verdict.
    result = run_command(["smartctl", "-H", "-j", path], timeout=15.0, ok_codes=tuple(range(256)))
    if result.stdout is None:
        return None, result.reason
    passed, reason = parse_smartctl_health(result.stdout)
    if passed is None:
        return None, reason
    return ("PASSED" if passed else "FAILED"), None


def collect_storage() -> dict[str, Any]:
    """Physical drives sorted by name, each with SMART health or the reason it has none."""
    unavailable: dict[str, str] = {}
    result = run_command(["lsblk", "-J", "-b", "-d", "-o", LSBLK_COLUMNS])
    if result.stdout is not None and result.reason is None:
        drives, source = parse_lsblk(result.stdout), "lsblk"
    else:
        drives, source = sysfs_drives(), "sysfs"
        unavailable["lsblk"] = f"{result.reason}; read /sys/block instead (no serials or transport)"
    for drive in drives:
        drive["smart_health"], reason = smart_health(drive["path"])
        if reason:
            unavailable[f"{drive['name']}.smart_health"] = reason
        if drive["serial"] is None:
            unavailable[f"{drive['name']}.serial"] = f"{source} reports no serial for this drive"
    drives.sort(key=lambda d: d["name"])
    return {"source": source, "devices": drives, "unavailable": unavailable}
