"""Who the machine is: host names, DMI vendor/model/serial/UUID, chassis and machine-id.

DMI serial and UUID are readable by root only on Linux; as another user they are recorded
as ``None`` with the reason, never guessed. The device id is added by the agent, not here.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from agent.collectors._util import read_text

DMI_DIR = Path("/sys/class/dmi/id")
MACHINE_ID = Path("/etc/machine-id")

# SMBIOS 3.x, section 7.4.1 "System Enclosure or Chassis Types".
CHASSIS_TYPES: dict[int, str] = {
    1: "Other",
    2: "Unknown",
    3: "Desktop",
    4: "Low Profile Desktop",
    5: "Pizza Box",
    6: "Mini Tower",
    7: "Tower",
    8: "Portable",
    9: "Laptop",
    10: "Notebook",
    11: "Hand Held",
    12: "Docking Station",
    13: "All in One",
    14: "Sub Notebook",
    15: "Space-saving",
    16: "Lunch Box",
    17: "Main Server Chassis",
    18: "Expansion Chassis",
    19: "SubChassis",
    20: "Bus Expansion Chassis",
    21: "Peripheral Chassis",
    22: "RAID Chassis",
    23: "Rack Mount Chassis",
    24: "Sealed-case PC",
    25: "Multi-system chassis",
    26: "Compact PCI",
    27: "Advanced TCA",
    28: "Blade",
    29: "Blade Enclosure",
    30: "Tablet",
    31: "Convertible",
    32: "Detachable",
    33: "IoT Gateway",
    34: "Embedded PC",
    35: "Mini PC",
    36: "Stick PC",
}

_DMI_FIELDS = {
    "manufacturer": "sys_vendor",
    "model": "product_name",
    "serial": "product_serial",
    "hardware_uuid": "product_uuid",
}


def chassis_name(raw: str) -> str:
    """Map the SMBIOS chassis code from sysfs to its name; unknown codes keep the number."""
    try:
        code = int(raw)
    except ValueError:
        return raw
    return CHASSIS_TYPES.get(code, f"SMBIOS chassis type {code}")


def fqdn(hostname: str | None = None) -> str:
    """The host's canonical name, as ``hostname -f`` (and FusionInventory) report it.

    ``socket.getfqdn()`` returns the first name of ``gethostbyaddr`` that contains a dot, else
    the address's primary name: with the common ``127.0.0.1 localhost`` line before
    ``127.0.0.1 vm`` in /etc/hosts it answers ``localhost``. The canonical name of a forward
    lookup (``AI_CANONNAME``) is the host's own entry instead; a lookup that fails or lands on
    a ``localhost`` name falls back to the plain host name, never to ``localhost``.
    """
    name = hostname or socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, None, flags=socket.AI_CANONNAME)
    except (OSError, UnicodeError):
        return name
    canonical = next((info[3] for info in infos if info[3]), "")
    if not canonical or canonical.split(".", 1)[0].lower() in ("localhost", "localhost6", "ip6-localhost"):
        return name
    return canonical


def collect_identity(dmi_dir: Path = DMI_DIR, machine_id_path: Path = MACHINE_ID) -> dict[str, Any]:
    """Host names, DMI identity and machine-id; missing values are ``None`` with a reason."""
    unavailable: dict[str, str] = {}
    hostname = socket.gethostname()
    result: dict[str, Any] = {"hostname": hostname, "fqdn": fqdn(hostname)}
    for field, name in _DMI_FIELDS.items():
        value, reason = read_text(dmi_dir / name)
        result[field] = value
        if reason:
            unavailable[field] = reason
    raw_chassis, reason = read_text(dmi_dir / "chassis_type")
    result["chassis_type"] = chassis_name(raw_chassis) if raw_chassis else None
    if reason:
        unavailable["chassis_type"] = reason
    result["machine_id"], reason = read_text(machine_id_path)
    if reason:
        unavailable["machine_id"] = reason
    result["unavailable"] = unavailable
    return result
