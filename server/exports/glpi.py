"""Export an inventory in the GLPI agent inventory format (JSON Schema draft-07, inventory_format 1.2.x).

Units follow the schema: ``hardware.memory``/``swap`` and ``drives.total``/``free`` in MB
(MiB, integers), battery capacities in mWh. Values the agent could not read are left out rather
than filled with placeholders (``hardware.vmsystem`` is "Physical" only when the agent reported
no virtualization, not when it could not tell); enum-constrained fields (``networks.type``, ``cpus.arch``) are
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


#: systemd-detect-virt names → what GLPI agents put in ``hardware.vmsystem``.
_VMSYSTEMS = {
    "docker": "Docker", "podman": "Podman", "lxc": "lxc", "lxc-libvirt": "lxc", "systemd-nspawn": "systemd-nspawn",
    "openvz": "Virtuozzo", "wsl": "WSL", "kvm": "KVM", "qemu": "QEMU", "vmware": "VMware", "oracle": "VirtualBox",
    "xen": "Xen", "microsoft": "Hyper-V", "parallels": "Parallels", "bhyve": "bhyve", "amazon": "Amazon EC2",
    "google": "Google Compute Engine",
}
_CPU_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "CentaurHauls": "VIA", "HygonGenuine": "Hygon"}


def _vmsystem(inventory: Mapping[str, Any]) -> str | None:
    """The innermost virtualization layer (a container before its VM), or "Physical"; None when unknown."""
    virt = _section(inventory, "virtualization")
    if virt.get("is_virtual") is None:
        return None
    name = virt.get("container") or virt.get("vm")
    return _VMSYSTEMS.get(name, name) if isinstance(name, str) else "Physical"


def _last_login(inventory: Mapping[str, Any]) -> dict[str, Any]:
    last = _section(inventory, "logins").get("last") or []
    return last[0] if last and isinstance(last[0], dict) else {}


def _hardware(inventory: Mapping[str, Any]) -> dict[str, Any]:
    identity, memory = _section(inventory, "identity"), _section(inventory, "memory")
    network, users = _section(inventory, "network"), _section(inventory, "users")
    logged = users.get("users") or []
    last = _last_login(inventory)
    when = last.get("time")
    servers = _section(inventory, "dns").get("nameservers") or []
    return _compact(
        {
            "name": identity.get("hostname"),
            "uuid": identity.get("hardware_uuid"),
            "chassis_type": identity.get("chassis_type"),
            "memory": _mb(memory.get("total_bytes")),
            "swap": _mb(memory.get("swap_total_bytes")),
            "defaultgateway": network.get("default_gateway"),
            "dns": "/".join(str(s) for s in servers) or None,
            "vmsystem": _vmsystem(inventory),
            "lastloggeduser": last.get("user") or (logged[0] if logged else None),
            "datelastloggeduser": when.replace("T", " ").rstrip("Z") if isinstance(when, str) and last else None,
        }
    )


def _bios(inventory: Mapping[str, Any]) -> dict[str, Any]:
    identity = _section(inventory, "identity")
    return _compact(
        {"smanufacturer": identity.get("manufacturer"), "smodel": identity.get("model"), "ssn": identity.get("serial")}
    )


def _dns_domain(inventory: Mapping[str, Any]) -> str | None:
    """The domain part of the FQDN, else the first search domain."""
    fqdn = _section(inventory, "identity").get("fqdn")
    if isinstance(fqdn, str) and "." in fqdn:
        return fqdn.split(".", 1)[1]
    search = _section(inventory, "dns").get("search") or []
    return str(search[0]) if search else None


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
            "dns_domain": _dns_domain(inventory),
            "timezone": timezone,
        }
    )


def _cpu_description(cpu: Mapping[str, Any]) -> str | None:
    """``Family 25 Model 1 Stepping 1`` (as Windows names x86 processors), plus the microcode revision."""
    parts = [f"{label} {cpu[key]}" for label, key in (("Family", "family"), ("Model", "model_number"),
                                                       ("Stepping", "stepping")) if isinstance(cpu.get(key), int)]
    if cpu.get("microcode"):
        parts.append(f"Microcode {cpu['microcode']}")
    return " ".join(parts) or None


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
                "manufacturer": _CPU_VENDORS.get(cpu.get("vendor") or "", cpu.get("vendor")),
                "familynumber": str(cpu["family"]) if isinstance(cpu.get("family"), int) else None,
                "model": str(cpu["model_number"]) if isinstance(cpu.get("model_number"), int) else None,
                "stepping": cpu.get("stepping") if isinstance(cpu.get("stepping"), int) else None,
                "description": _cpu_description(cpu),
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


def _storages(inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        _compact(
            {
                "name": drive.get("name"),
                "disksize": _mb(drive.get("size_bytes")),
                "model": drive.get("model"),
                "manufacturer": drive.get("vendor"),
                "serial": drive.get("serial"),
                "firmware": drive.get("firmware"),
                "wwn": drive.get("wwn"),
                "type": drive.get("kind"),
                "interface": drive["transport"].upper() if isinstance(drive.get("transport"), str) else None,
                "description": f"SMART {drive['smart_health']}" if drive.get("smart_health") else None,
            }
        )
        for drive in _section(inventory, "storage").get("devices") or []
    ]


def _controllers(inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        _compact(
            {
                "name": dev.get("name") or dev.get("type"),
                "caption": dev.get("name"),
                "manufacturer": dev.get("vendor"),
                "vendorid": dev.get("vendor_id"),
                "productid": dev.get("product_id"),
                "pciclass": dev.get("class_id"),
                "pcislot": dev.get("slot"),
                "pcisubsystemid": dev.get("subsystem_id"),
                "rev": dev.get("revision"),
                "type": dev.get("type"),
                "driver": dev.get("driver"),
            }
        )
        for dev in _section(inventory, "controllers").get("devices") or []
        if dev.get("bus") == "pci"
    ]


def _usbdevices(inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        _compact(
            {
                "name": dev.get("name"),
                "manufacturer": dev.get("vendor"),
                "vendorid": dev.get("vendor_id"),
                "productid": dev.get("product_id"),
                "class": str(int(dev["class_id"], 16)) if isinstance(dev.get("class_id"), str)
                and re.fullmatch(r"[0-9a-fA-F]{1,4}", dev["class_id"]) else None,
            }
        )
        for dev in _section(inventory, "controllers").get("devices") or []
        if dev.get("bus") == "usb"
    ]


def _local_users(inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        _compact(
            {
                "id": str(user["uid"]) if isinstance(user.get("uid"), int) else user.get("name"),
                "login": user.get("name"),
                "name": user.get("full_name"),
                "home": user.get("home"),
                "shell": user.get("shell"),
            }
        )
        for user in _section(inventory, "accounts").get("users") or []
        if user.get("name")
    ]


def _local_groups(inventory: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": str(group["gid"]) if isinstance(group.get("gid"), int) else str(group["name"]),
            "name": group["name"],
            **({"members": [str(m) for m in group["members"]]} if group.get("members") else {}),
        }
        for group in _section(inventory, "accounts").get("groups") or []
        if group.get("name")
    ]


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
        "storages": _storages(inventory),
        "controllers": _controllers(inventory),
        "usbdevices": _usbdevices(inventory),
        "local_users": _local_users(inventory),
        "local_groups": _local_groups(inventory),
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
