"""Declared CMDB relations in the ServiceNow IRE payload, so IRE writes them as ``cmdb_rel_ci``.

IRE relations join items of one payload by index, so each device's payload gains one item per
CI it is related to — a business service as ``cmdb_ci_service`` (identified by name), another
device as ``cmdb_ci_computer`` (name, serial, correlation id) — and one relation per declared
edge, typed as ServiceNow's base system does:

- device *runs* service → the service ``Depends on::Used by`` the device (parent: service);
- A *depends_on* B → A ``Depends on::Used by`` B (parent: A).

Relations are read from the store once per export (:func:`ire_converter`), not per device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.store import Database

from .fleet import Converter
from .servicenow import to_servicenow_ire

RELATION_DEPENDS = "Depends on::Used by"
#: ServiceNow class of each CMDB node type.
CLASSES = {"device": "cmdb_ci_computer", "service": "cmdb_ci_service"}


@dataclass(frozen=True)
class Node:
    type: str
    id: str
    name: str
    serial: str = ""


@dataclass(frozen=True)
class Edge:
    """A declared relation as ServiceNow sees it: ``parent`` Depends on ``child``."""

    parent: Node
    child: Node


def edge(kind: str, source: Node, target: Node) -> Edge:
    return Edge(target, source) if kind == "runs" else Edge(source, target)


def _item(device_id: str, node: Node) -> dict[str, Any]:
    if node.type == "service":
        values = {"name": node.name}
    else:
        values = {k: v for k, v in (("name", node.name), ("serial_number", node.serial),
                                    ("correlation_id", node.id)) if v}
    return {"className": CLASSES[node.type], "internal_id": f"{device_id}:rel:{node.type}:{node.id}", "values": values}


def add_relations(payload: dict[str, Any], device_id: str, edges: list[Edge]) -> dict[str, Any]:
    """Append the related CIs and ``Depends on::Used by`` relations to one device's IRE payload."""
    index: dict[tuple[str, str], int] = {("device", device_id): 0}
    for e in edges:
        for node in (e.parent, e.child):
            key = (node.type, node.id)
            if key not in index:
                payload["items"].append(_item(device_id, node))
                index[key] = len(payload["items"]) - 1
        payload["relations"].append({"parent": index[(e.parent.type, e.parent.id)],
                                     "child": index[(e.child.type, e.child.id)], "type": RELATION_DEPENDS})
    return payload


async def device_edges(db: Database) -> dict[str, list[Edge]]:
    """Device id → the declared relations touching it (both ends named)."""
    rows = await db.fetchall(
        "SELECT r.kind, r.source_type, r.source_id, r.target_type, r.target_id,"
        " COALESCE(sd.hostname, ss.name, '') AS source_name, COALESCE(sc.serial, '') AS source_serial,"
        " COALESCE(td.hostname, ts.name, '') AS target_name, COALESCE(tc.serial, '') AS target_serial"
        " FROM cmdb_relations r"
        " LEFT JOIN devices sd ON r.source_type = 'device' AND sd.id = r.source_id"
        " LEFT JOIN cmdb_devices sc ON r.source_type = 'device' AND sc.device_id = r.source_id"
        " LEFT JOIN cmdb_services ss ON r.source_type = 'service' AND ss.id = r.source_id"
        " LEFT JOIN devices td ON r.target_type = 'device' AND td.id = r.target_id"
        " LEFT JOIN cmdb_devices tc ON r.target_type = 'device' AND tc.device_id = r.target_id"
        " LEFT JOIN cmdb_services ts ON r.target_type = 'service' AND ts.id = r.target_id"
        " ORDER BY r.created_at, r.id")
    found: dict[str, list[Edge]] = {}
    for r in rows:
        source = Node(r["source_type"], r["source_id"], r["source_name"], r["source_serial"])
        target = Node(r["target_type"], r["target_id"], r["target_name"], r["target_serial"])
        if not source.name or not target.name:
            continue  # a dangling end (device deleted): nothing IRE could identify
        e = edge(r["kind"], source, target)
        for node in {source, target}:
            if node.type == "device":
                found.setdefault(node.id, []).append(e)
    return found


async def ire_converter(db: Database) -> Converter:
    """``to_servicenow_ire`` plus each device's declared relations (read once for the export)."""
    edges = await device_edges(db)

    def convert(device_id: str, inventory: Mapping[str, Any]) -> dict[str, Any]:
        return add_relations(to_servicenow_ire(device_id, inventory), device_id, edges.get(device_id, []))

    return convert
