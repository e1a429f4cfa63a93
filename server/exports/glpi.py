"""Export an inventory in the GLPI agent inventory format (JSON Schema draft-07, inventory_format 1.2.x).

Units follow the schema: ``hardware.memory``/``swap`` and ``drives.total``/``free`` in MB
(MiB, integers), battery capacities in mWh. Values the agent could not read are left out rather
than filled with placeholders; enum-constrained fields (``networks.type``, ``cpus.arch``) are
only set when the value is one the schema allows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import metadata
from typing import Any

MIB = 1024 * 1024
_CPU_ARCH = re.compile(r"^(mips|mips64|alpha|sparc|sparc64|m68k|i\d86|x86_64|powerpc|powerpc64|arm.*|aarch64)$")
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "x86": "i686"}


def _client_version() -> str:
    try:
        return f"Helpline-Agent_v{metadata.version('helpline')}"
    except metadata.PackageNotFoundError:
        return "Helpline-Agent"


def _compact(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None values: the schema types fields as strings/integers, never null."""
    return {k: v for k, v in values.items() if v is not None}


def _section(inventory: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = inventory.get(name)
    return value if isinstance(value, dict) else {}


def _mb(value: Any) -> int | None:
    return int(value) // MIB if isinstance(value, int) else None


def _glpi_arch(arch: Any) -> str | None:
    if not isinstance(arch, str):
        return None
    arch = _ARCH_ALIASES.get(arch.lower(), arch)
    return arch if _CPU_ARCH.match(arch) else None


def _glpi_offset(utc_offset: Any) -> str | None:
    """``"+02:00"`` → ``"+0200"`` as the schema's timezone.offset wants."""
    if isinstance(utc_offset, str) and re.fullmatch(r"[+-]\d{2}:\d{2}", utc_offset):
        return utc_offset.replace(":", "")
    return None


def _hardware(inventory: Mapping[str, Any]) -> dict[str, Any]:
    identity, memory = _section(inventory, "identity"), _section(inventory, "memory")
    network, users = _section(inventory, "network"), _section(inventory, "users")
    logged = users.get("users") or []
    return _compact(
        {
            "name": identity.get("hostname"),
            "uuid": identity.get("hardware_uuid"),
            "chassis_type": identity.get("chassis_type"),
            "memory": _mb(memory.get("total_bytes")),
            "swap": _mb(memory.get("swap_total_bytes")),
            "defaultgateway": network.get("default_gateway"),
            "lastloggeduser": logged[0] if logged else None,
        }
    )


def _bios(inventory: Mapping[str, Any]) -> dict[str, Any]:
    identity = _section(inventory, "identity")
    return _compact(
        {"smanufacturer": identity.get("manufacturer"), "smodel": identity.get("model"), "ssn": identity.get("serial")}
    )


def _operatingsystem(inventory: Mapping[str, Any]) -> dict[str, Any]:
    os_info, identity = _section(inventory, "os"), _section(inventory, "identity")
    tz_raw = os_info.get("timezone")
    tz: dict[str, Any] = tz_raw if isinstance(tz_raw, dict) else {}
    offset = _glpi_offset(tz.get("utc_offset"))
    timezone = {"name": tz["name"], "offset": offset} if tz.get("name") and offset else None
    system = os_info.get("system")
    return _compact(
        {
            "name": os_info.get("name"),
            "version": os_info.get("version") or os_info.get("version_id"),
            "full_name": os_info.get("pretty_name"),
            "kernel_name": system.lower() if isinstance(system, str) else None,
            "kernel_version": os_info.get("kernel"),
            "arch": os_info.get("arch"),
            "boot_time": os_info.get("boot_time"),
            "fqdn": identity.get("fqdn"),
            "timezone": timezone,
        }
    )


def _cpus(inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
    cpu = _section(inventory, "cpu")
    if not cpu.get("model") and not cpu.get("logical_cores"):
        return []
    return [
        _compact(
            {
                "name": cpu.get("model"),
                "core": cpu.get("physical_cores"),
                "thread": cpu.get("logical_cores"),
                "speed": cpu.get("freq_mhz"),
                "arch": _glpi_arch(_section(inventory, "os").get("arch")),
            }
        )
    ]


def _memories(inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The agent sees total RAM, not modules: one entry saying exactly that."""
    total = _mb(_section(inventory, "memory").get("total_bytes"))
    if total is None:
        return []
    return [
        {
            "capacity": total,
            "caption": "System memory",
            "description": "Total visible to the OS (modules not inventoried)",
        }
    ]


def _drives(inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
    partitions = _section(inventory, "disks").get("partitions") or []
    encryption = _section(inventory, "security").get("disk_encryption") or {}
    crypt_names = {d.get("name") for d in encryption.get("devices") or [] if isinstance(d, dict)}
    drives = []
    for part in partitions:
        device = part.get("device") or ""
        encrypted = device.rsplit("/", 1)[-1] in crypt_names if device.startswith("/dev/mapper/") else False
        drives.append(
            _compact(
                {
                    "volumn": device or None,
                    "type": part.get("mountpoint"),
                    "filesystem": part.get("fstype"),
                    "total": _mb(part.get("total_bytes")),
                    "free": _mb(part.get("free_bytes")),
                    "systemdrive": part.get("mountpoint") == "/",
                    "encrypt_status": "Yes" if encrypted else None,
                    "encrypt_name": "dm-crypt" if encrypted else None,
                }
            )
        )
    return drives


def _networks(inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per address, as GLPI agents do; an interface without addresses gets one entry."""
    entries: list[dict[str, Any]] = []
    gateway = _section(inventory, "network").get("default_gateway")
    for iface in _section(inventory, "network").get("interfaces") or []:
        base = _compact(
            {
                "description": iface.get("name"),
                "mac": iface.get("mac"),
                "status": {True: "up", False: "down"}.get(iface.get("is_up")),
                "speed": str(iface["speed_mbps"]) if iface.get("speed_mbps") else None,
                "mtu": iface.get("mtu"),
                "type": "loopback" if iface.get("name") == "lo" else None,
                "virtualdev": True if iface.get("name") == "lo" else None,
            }
        )
        addresses = [
            _compact({"ipaddress": a.get("address"), "ipmask": a.get("netmask")}) for a in iface.get("ipv4") or []
        ] + [_compact({"ipaddress6": a.get("address"), "ipmask6": a.get("netmask")}) for a in iface.get("ipv6") or []]
        if iface.get("is_default_route") and gateway:
            base["ipgateway"] = gateway
        entries.extend({**base, **addr} for addr in addresses or [{}])
    return entries


def _softwares(inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
    result = []
    for pkg in _section(inventory, "software").get("packages") or []:
        date = pkg.get("install_date")
        result.append(
            _compact(
                {
                    "name": pkg.get("name"),
                    "version": pkg.get("version"),
                    "arch": pkg.get("arch"),
                    "publisher": pkg.get("vendor"),
                    "from": pkg.get("source"),
                    "install_date": date[:10] if isinstance(date, str) else None,
                }
            )
        )
    return result


def _batteries(inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
    battery = inventory.get("battery")
    if not isinstance(battery, dict):
        return []
    return [
        _compact(
            {
                "name": battery.get("model") or battery.get("name"),
                "manufacturer": battery.get("manufacturer"),
                "serial": battery.get("serial"),
                "chemistry": battery.get("chemistry"),
                "capacity": battery.get("design_capacity_mwh"),
                "real_capacity": battery.get("full_capacity_mwh"),
            }
        )
    ]


def _firewalls(inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
    fw = _section(inventory, "security").get("firewall") or {}
    if fw.get("active") is None:
        return []
    return [_compact({"status": "on" if fw["active"] else "off", "description": fw.get("backend")})]


def _monitors(inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"caption": f"Display {m['index']}", "description": f"{m['width']}x{m['height']}+{m['left']}+{m['top']}"}
        for m in _section(inventory, "displays").get("monitors") or []
    ]


def to_glpi_inventory(
    device_id: str,
    inventory: Mapping[str, Any],
    *,
    itemtype: str = "Computer",
    deviceid_suffix: str | None = None,
    tag: str | None = None,
    versionclient: str | None = None,
) -> dict[str, Any]:
    """Build a GLPI inventory document; ``deviceid`` is ``device_id`` (plus ``-suffix`` when given)."""
    content: dict[str, Any] = {"versionclient": versionclient or _client_version()}
    sections = {
        "hardware": _hardware(inventory),
        "bios": _bios(inventory),
        "operatingsystem": _operatingsystem(inventory),
    }
    content.update({key: value for key, value in sections.items() if value})
    lists = {
        "cpus": _cpus(inventory),
        "memories": _memories(inventory),
        "drives": _drives(inventory),
        "networks": _networks(inventory),
        "softwares": _softwares(inventory),
        "batteries": _batteries(inventory),
        "users": [{"login": name} for name in _section(inventory, "users").get("users") or []],
        "firewalls": _firewalls(inventory),
        "monitors": _monitors(inventory),
    }
    content.update({key: value for key, value in lists.items() if value})
    doc: dict[str, Any] = {
        "deviceid": f"{device_id}-{deviceid_suffix}" if deviceid_suffix else device_id,
        "itemtype": itemtype,
        "action": "inventory",
        "content": content,
    }
    if tag:
        doc["tag"] = tag
    return doc
