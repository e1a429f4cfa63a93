"""Export an inventory as a ServiceNow IRE payload and read IRE's per-item results.

Payload shape (REST ``POST /api/now/identifyreconcile``): ``items`` are CIs — the computer
(``cmdb_ci_computer``, index 0) and one ``cmdb_ci_network_adapter`` per interface with a MAC;
``relations`` link them by item index with the ``Owns::Owned by`` type; each physical drive
is a ``cmdb_ci_disk`` the computer ``Contains`` (the relation ServiceNow's IRE documentation
uses for disks: ``Contains::Contained by``). Installed software
rows (``cmdb_sam_sw_install``) are not CIs but records that reference the computer, so they go
in the computer item's ``related`` list, which is where IRE accepts such tables.
Reference fields (manufacturer, model_id) need sys_ids and are not sent.

IRE answers HTTP 200 even when items fail: ``parse_ire_response`` pulls out each item's
``className``, ``operation``, ``sysId`` and ``errors`` so callers can act on failures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024
RELATION_OWNS = "Owns::Owned by"
RELATION_CONTAINS = "Contains::Contained by"
GB = 1000**3


class IreResponseError(ValueError):
    """The IRE response body does not have the documented ``result.items`` shape."""


@dataclass(frozen=True, slots=True)
class IreError:
    """One error IRE reported for an item (``error`` is the code, e.g. MISSING_MATCHING_ATTRIBUTES)."""

    error: str
    message: str


@dataclass(frozen=True, slots=True)
class IreItemResult:
    """IRE's outcome for the payload item at ``index``; ``ok`` when it reported no errors."""

    index: int
    class_name: str | None
    operation: str | None
    sys_id: str | None
    errors: tuple[IreError, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def _section(inventory: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = inventory.get(name)
    return value if isinstance(value, dict) else {}


def _strings(values: Mapping[str, Any]) -> dict[str, str]:
    """IRE values are field name → string; absent values are left out, not sent empty."""
    return {k: str(v) for k, v in values.items() if v is not None and v != ""}


def _first_ipv4(iface: Mapping[str, Any]) -> str | None:
    addrs = iface.get("ipv4") or []
    return addrs[0].get("address") if addrs else None


def _bool_text(value: Any) -> str | None:
    return ("true" if value else "false") if isinstance(value, bool) else None


def _dns_domain(fqdn: Any, search: Any) -> str | None:
    if isinstance(fqdn, str) and "." in fqdn:
        return fqdn.split(".", 1)[1]
    return str(search[0]) if isinstance(search, list) and search else None


def _disk_values(drive: Mapping[str, Any]) -> dict[str, str]:
    size = drive.get("size_bytes")
    return _strings(
        {
            "name": drive.get("name"),
            "device_id": drive.get("path"),
            "serial_number": drive.get("serial"),
            "size_bytes": size if isinstance(size, int) else None,
            "disk_space": round(size / GB, 2) if isinstance(size, int) else None,  # GB, as Discovery fills it
            "device_interface": drive.get("transport"),
            "short_description": " ".join(str(drive[k]) for k in ("vendor", "model") if drive.get(k)) or None,
        }
    )


def _computer_values(device_id: str, inventory: Mapping[str, Any]) -> dict[str, str]:
    identity, os_info = _section(inventory, "identity"), _section(inventory, "os")
    cpu, memory = _section(inventory, "cpu"), _section(inventory, "memory")
    ifaces = _section(inventory, "network").get("interfaces") or []
    primary = next((i for i in ifaces if i.get("is_default_route")), None)
    total = memory.get("total_bytes")
    return _strings(
        {
            "name": identity.get("hostname"),
            "fqdn": identity.get("fqdn"),
            "serial_number": identity.get("serial"),
            "correlation_id": device_id,
            "model_number": identity.get("model"),
            "chassis_type": identity.get("chassis_type"),
            "os": os_info.get("name"),
            "os_version": os_info.get("version_id") or os_info.get("version"),
            "cpu_name": cpu.get("model"),
            "cpu_count": cpu.get("logical_cores"),
            "cpu_core_count": cpu.get("physical_cores"),
            "cpu_speed": cpu.get("freq_mhz"),
            "ram": total // MIB if isinstance(total, int) else None,
            "ip_address": _first_ipv4(primary) if primary else None,
            "mac_address": primary.get("mac") if primary else None,
            "virtual": _bool_text(_section(inventory, "virtualization").get("is_virtual")),
            "dns_domain": _dns_domain(identity.get("fqdn"), _section(inventory, "dns").get("search")),
        }
    )


def to_servicenow_ire(device_id: str, inventory: Mapping[str, Any]) -> dict[str, Any]:
    """Build the ``identifyreconcile`` request body for one device."""
    software = [
        {
            "className": "cmdb_sam_sw_install",
            "values": _strings(
                {
                    "display_name": pkg.get("name"),
                    "version": pkg.get("version"),
                    "publisher": pkg.get("vendor"),
                    "install_date": pkg.get("install_date", "") and str(pkg["install_date"])[:10],
                }
            ),
        }
        for pkg in _section(inventory, "software").get("packages") or []
        if pkg.get("name")
    ]
    computer: dict[str, Any] = {
        "className": "cmdb_ci_computer",
        "internal_id": device_id,
        "values": _computer_values(device_id, inventory),
    }
    if software:
        computer["related"] = software
    items: list[dict[str, Any]] = [computer]
    relations: list[dict[str, Any]] = []
    for iface in _section(inventory, "network").get("interfaces") or []:
        mac = iface.get("mac")
        if not mac or mac == "00:00:00:00:00:00":
            continue  # loopback and MAC-less links are not adapters IRE can identify
        items.append(
            {
                "className": "cmdb_ci_network_adapter",
                "internal_id": f"{device_id}:nic:{iface.get('name')}",
                "values": _strings({"name": iface.get("name"), "mac_address": mac, "ip_address": _first_ipv4(iface)}),
            }
        )
        relations.append({"parent": 0, "child": len(items) - 1, "type": RELATION_OWNS})
    for drive in _section(inventory, "storage").get("devices") or []:
        if not isinstance(drive, dict) or not drive.get("name"):
            continue
        items.append(
            {
                "className": "cmdb_ci_disk",
                "internal_id": f"{device_id}:disk:{drive['name']}",
                "values": _disk_values(drive),
            }
        )
        relations.append({"parent": 0, "child": len(items) - 1, "type": RELATION_CONTAINS})
    return {"items": items, "relations": relations}


def _errors(raw: Any) -> tuple[IreError, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(
        IreError(error=str(e.get("error", "")), message=str(e.get("message", ""))) for e in raw if isinstance(e, dict)
    )


def parse_ire_response(body: Mapping[str, Any]) -> list[IreItemResult]:
    """Per-item results from an IRE response (``{"result": {"items": [...]}}``).

    ``result.items[i]`` answers payload item ``i``; a ``sysId`` of "Unknown" means
    identification failed and is reported as None.
    """
    result = body.get("result") if isinstance(body, Mapping) else None
    if isinstance(result, list):  # some releases wrap the result object in a list
        result = result[0] if result and isinstance(result[0], dict) else None
    items = result.get("items") if isinstance(result, dict) else None
    if not isinstance(items, list):
        raise IreResponseError("IRE response has no result.items list")
    parsed = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            parsed.append(IreItemResult(index, None, None, None, (IreError("MALFORMED_ITEM", repr(item)[:200]),)))
            continue
        sys_id = item.get("sysId")
        parsed.append(
            IreItemResult(
                index=index,
                class_name=item.get("className") if isinstance(item.get("className"), str) else None,
                operation=item.get("operation") if isinstance(item.get("operation"), str) else None,
                sys_id=sys_id if isinstance(sys_id, str) and sys_id and sys_id != "Unknown" else None,
                errors=_errors(item.get("errors")),
            )
        )
    return parsed
