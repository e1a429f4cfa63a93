"""The typed shape of every inventory section the server stores, with size limits.

An agent is hostile input: ``network.interfaces = [1]`` from one device once made the GLPI
and ServiceNow exports fail for the whole fleet. So each reported section is converted into
its Struct here (:func:`check_section`) before anything is stored; a section that does not
fit is refused with the path of the first bad value. The stored data stays exactly what the
agent sent (the checksums are over it); these Structs only decide whether it is accepted.

Every field may be absent or null (a collector that could not read a value says why in
``unavailable``), and every section may instead be a collector's crash report (``error``).
Fields the schema does not know are refused: a newer agent's new field needs a server that
knows it (update servers first). Keep in step with ``agent/collectors/`` (a test sends this
machine's real inventory).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

#: Strings the agent reads from the OS (names, versions, paths).
Text = Annotated[str, msgspec.Meta(max_length=1024)]
#: Longer free text (a collector's reason or crash message).
Reason = Annotated[str, msgspec.Meta(max_length=4096)]
Bytes = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Small = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]
Coordinate = Annotated[int, msgspec.Meta(ge=-1_000_000, le=1_000_000)]
Percent = Annotated[float, msgspec.Meta(ge=0, le=1000)]
Unavailable = Annotated[dict[Text, Reason], msgspec.Meta(max_length=4096)]

MAX_ITEMS = 4096
MAX_PACKAGES = 50_000


#: Lists: at most this many entries.
LIST = msgspec.Meta(max_length=MAX_ITEMS)


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Parts of a section: unknown fields refused."""


class _Section(_Strict):
    """Every section: the reasons values are missing, or a collector's crash report."""

    unavailable: Unavailable = {}
    error: Reason | None = None


class Identity(_Section):
    hostname: Text | None = None
    fqdn: Text | None = None
    manufacturer: Text | None = None
    model: Text | None = None
    serial: Text | None = None
    hardware_uuid: Text | None = None
    chassis_type: Text | None = None
    machine_id: Text | None = None


class Timezone(_Strict):
    name: Text | None = None
    utc_offset: Text | None = None


class OperatingSystem(_Section):
    name: Text | None = None
    id: Text | None = None
    version: Text | None = None
    version_id: Text | None = None
    codename: Text | None = None
    pretty_name: Text | None = None
    system: Text | None = None
    kernel: Text | None = None
    arch: Text | None = None
    boot_time: Text | None = None
    timezone: Timezone | None = None


class Cpu(_Section):
    model: Text | None = None
    vendor: Text | None = None
    family: Small | None = None
    model_number: Small | None = None
    stepping: Small | None = None
    microcode: Text | None = None
    physical_cores: Small | None = None
    logical_cores: Small | None = None
    freq_mhz: Small | None = None


class Memory(_Section):
    total_bytes: Bytes | None = None
    swap_total_bytes: Bytes | None = None


class Partition(_Strict):
    device: Text | None = None
    mountpoint: Text | None = None
    fstype: Text | None = None
    total_bytes: Bytes | None = None
    free_bytes: Bytes | None = None


class Disks(_Section):
    partitions: Annotated[list[Partition], LIST] = []


class Address(_Strict):
    address: Text | None = None
    netmask: Text | None = None


class Interface(_Strict):
    name: Text | None = None
    mac: Text | None = None
    ipv4: Annotated[list[Address], LIST] = []
    ipv6: Annotated[list[Address], LIST] = []
    speed_mbps: Small | None = None
    mtu: Small | None = None
    is_up: bool | None = None
    is_default_route: bool | None = None


class Network(_Section):
    interfaces: Annotated[list[Interface], LIST] = []
    default_gateway: Text | None = None


class Battery(_Section):
    name: Text | None = None
    percent: Percent | None = None
    plugged: bool | None = None
    health_percent: Percent | None = None
    design_capacity_mwh: Bytes | None = None
    full_capacity_mwh: Bytes | None = None
    manufacturer: Text | None = None
    model: Text | None = None
    serial: Text | None = None
    chemistry: Text | None = None


class Monitor(_Strict):
    index: Small
    width: Small
    height: Small
    left: Coordinate
    top: Coordinate


class Displays(_Section):
    monitors: Annotated[list[Monitor], msgspec.Meta(max_length=64)] = []


class Package(_Strict):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    version: Text | None = None
    arch: Text | None = None
    source: Text | None = None
    vendor: Text | None = None
    install_date: Text | None = None
    #: dpkg: the source package and its version when they differ from name/version (issue 17).
    source_package: Text | None = None
    source_version: Text | None = None


class Software(_Section):
    sources: Annotated[list[Text], msgspec.Meta(max_length=64)] = []
    packages: Annotated[list[Package], msgspec.Meta(max_length=MAX_PACKAGES)] = []


class UserSession(_Strict):
    name: Text | None = None
    terminal: Text | None = None
    host: Text | None = None
    started: Text | None = None
    pid: Annotated[int, msgspec.Meta(ge=0, le=2**32)] | None = None


class Users(_Section):
    users: Annotated[list[Text], LIST] = []
    sessions: Annotated[list[UserSession], LIST] = []


class CryptDevice(_Strict):
    name: Text | None = None
    type: Text | None = None
    fstype: Text | None = None


class DiskEncryption(_Strict):
    method: Text | None = None
    encrypted: bool | None = None
    devices: Annotated[list[CryptDevice], LIST] = []


class Firewall(_Strict):
    backend: Text | None = None
    active: bool | None = None


class PendingUpdates(_Strict):
    manager: Text | None = None
    count: Small | None = None


class RebootRequired(_Strict):
    required: bool | None = None
    packages: Annotated[list[Text], LIST] = []


class Security(_Section):
    disk_encryption: DiskEncryption | None = None
    firewall: Firewall | None = None
    pending_updates: PendingUpdates | None = None
    reboot_required: RebootRequired | None = None


class Drive(_Strict):
    name: Text | None = None
    path: Text | None = None
    size_bytes: Bytes | None = None
    model: Text | None = None
    vendor: Text | None = None
    serial: Text | None = None
    firmware: Text | None = None
    wwn: Text | None = None
    transport: Text | None = None
    rotational: bool | None = None
    removable: bool | None = None
    kind: Text | None = None
    smart_health: Literal["PASSED", "FAILED"] | None = None


class Storage(_Section):
    source: Text | None = None
    devices: Annotated[list[Drive], msgspec.Meta(max_length=256)] = []


class Controller(_Strict):
    bus: Literal["pci", "usb"] | None = None
    slot: Text | None = None
    vendor_id: Text | None = None
    product_id: Text | None = None
    class_id: Text | None = None
    type: Text | None = None
    vendor: Text | None = None
    name: Text | None = None
    subsystem_id: Text | None = None
    revision: Text | None = None
    driver: Text | None = None


class Controllers(_Section):
    devices: Annotated[list[Controller], msgspec.Meta(max_length=1024)] = []


class Virtualization(_Section):
    vm: Text | None = None
    container: Text | None = None
    is_virtual: bool | None = None
    source: Text | None = None


class Dns(_Section):
    nameservers: Annotated[list[Text], msgspec.Meta(max_length=64)] = []
    search: Annotated[list[Text], msgspec.Meta(max_length=64)] = []
    stub: Text | None = None
    source: Text | None = None


Id = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]


class LocalUser(_Strict):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    uid: Id | None = None
    gid: Id | None = None
    full_name: Text | None = None
    home: Text | None = None
    shell: Text | None = None
    system: bool | None = None


class LocalGroup(_Strict):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    gid: Id | None = None
    members: Annotated[list[Annotated[str, msgspec.Meta(max_length=256)]], LIST] = []


class Accounts(_Section):
    users: Annotated[list[LocalUser], LIST] = []
    groups: Annotated[list[LocalGroup], LIST] = []


class Login(_Strict):
    user: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    #: ISO 8601 UTC, as the agent's collectors write times (``2024-01-02T03:04:05Z``).
    time: Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")]
    terminal: Text | None = None
    host: Text | None = None


class Logins(_Section):
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=36500)] | None = None
    entries: Annotated[list[Login], msgspec.Meta(max_length=1000)] = []
    last: Annotated[list[Login], LIST] = []


#: The schema of each section the server stores (the keys are ``sections.KNOWN_SECTIONS``).
SCHEMAS: dict[str, type[_Section]] = {
    "identity": Identity, "os": OperatingSystem, "cpu": Cpu, "memory": Memory, "disks": Disks,
    "network": Network, "battery": Battery, "displays": Displays, "software": Software, "users": Users,
    "security": Security, "storage": Storage, "controllers": Controllers, "virtualization": Virtualization,
    "dns": Dns, "accounts": Accounts, "logins": Logins,
}


class SectionInvalid(ValueError):
    """A section does not fit its schema; the message names the section and the bad value's path."""


def check_section(name: str, data: Any) -> None:
    """Raise :class:`SectionInvalid` unless ``data`` (decoded JSON) fits section ``name``'s schema."""
    schema = SCHEMAS.get(name)
    if schema is None:
        raise SectionInvalid(f"unknown section {name!r}")
    if data is None:
        return
    try:
        msgspec.convert(data, schema, strict=True)
    except msgspec.ValidationError as exc:
        raise SectionInvalid(f"section {name!r}: {exc}") from None
