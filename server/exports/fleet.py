"""Exporting many devices: one bad stored device is skipped and named, never fails the rest.

Inventory is validated when it arrives (:mod:`server.cmdb.schemas`), but a store may still
hold data an older server accepted without looking — ``network.interfaces = [1]`` from one
malicious agent once made both exports fail for the whole fleet. So each device's stored
sections are checked against the same schemas before conversion, and a device that fails
(or that a converter cannot handle) is reported in :attr:`FleetExport.skipped` with the
reason, while every other device is exported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.logs import escape
from server.cmdb.schemas import SCHEMAS, SectionInvalid, check_section

log = logging.getLogger(__name__)

#: ``to_glpi_inventory`` or ``to_servicenow_ire``: (device id, inventory) → document.
Converter = Callable[[str, Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Skipped:
    device_id: str
    reason: str


@dataclass
class FleetExport:
    #: (device id, document) for every device exported, in input order.
    documents: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def stored_problem(inventory: Mapping[str, Any]) -> str | None:
    """Why a stored inventory cannot be exported (a section that does not fit its schema), or None."""
    for name, data in inventory.items():
        if name not in SCHEMAS:
            continue  # converters read only the sections they know
        try:
            check_section(name, data)
        except SectionInvalid as exc:
            return escape(str(exc))[:512]  # may name a key an agent chose: printable only
    return None


def export_fleet(inventories: Iterable[tuple[str, Mapping[str, Any]]], convert: Converter) -> FleetExport:
    """Convert every device that has an inventory; skip (and log) the ones that cannot be."""
    result = FleetExport()
    for device_id, inventory in inventories:
        if not inventory:
            continue
        problem = stored_problem(inventory)
        if problem is None:
            try:
                result.documents.append((device_id, convert(device_id, inventory)))
                continue
            except Exception as exc:  # a converter tripping on one device must not stop the others
                log.exception("export failed for one device", extra={"device_id": device_id})
                problem = escape(f"export failed: {type(exc).__name__}: {exc}")[:512]
        else:
            log.warning("stored inventory does not fit its schema; device not exported",
                        extra={"device_id": device_id, "reason": problem})
        result.skipped.append(Skipped(device_id, problem))
    return result
