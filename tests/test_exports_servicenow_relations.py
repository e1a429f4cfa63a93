"""Declared CMDB relations reach ServiceNow as IRE relations (cmdb_rel_ci): `helpline admin export
--format servicenow` over a real store with a device that runs a service which depends on another
service and on a second device."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from helpline.cli import main
from server import devices
from server.cmdb import inventory_store, relations
from server.cmdb.sections import checksum
from server.exports.servicenow_relations import RELATION_DEPENDS
from server.store import open_database


async def _populate(data_dir: Path) -> None:
    db = await open_database(f"sqlite:///{data_dir / 'helpline.db'}")
    now = time.time()
    try:
        async with db.transaction() as tx:
            await devices.ensure_group(tx, "lab")
            for device_id, host, serial in (("dev-db", "db1", "SN-DB"), ("dev-web", "web1", "SN-WEB")):
                await devices.register(tx, device_id, "lab", "s-" + device_id, now + 86400)
                inv: dict[str, Any] = {"identity": {"hostname": host, "serial": serial}}
                await inventory_store.apply_report(tx, device_id, full=True, sections=inv,
                                                   checksums={k: checksum(v) for k, v in inv.items()}, now=now)
            for sid, name in (("svc-payroll", "Payroll"), ("svc-db", "Database")):
                await tx.execute("INSERT INTO cmdb_services (id, name, created_at, created_by) VALUES (?, ?, ?, 't')",
                                 (sid, name, now))
            await relations.add_relation(tx, "runs", ("device", "dev-db"), ("service", "svc-db"), "t", now)
            await relations.add_relation(tx, "depends_on", ("service", "svc-payroll"), ("service", "svc-db"), "t", now)
            await relations.add_relation(tx, "depends_on", ("service", "svc-payroll"), ("device", "dev-web"), "t", now)
    finally:
        await db.close()


def _named(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(parent name, type, child name) for each relation of one payload."""
    names = [i["values"].get("name", "") for i in doc["items"]]
    return sorted((names[r["parent"]], r["type"], names[r["child"]]) for r in doc["relations"])


async def test_export_carries_declared_relations(tmp_path: Path) -> None:
    """A device's payload names the services and devices it is related to and links them by index:
    the service it runs depends on it; a service that depends on a device appears on that device."""
    data = tmp_path / "srv"
    await _populate(data)
    out = tmp_path / "sn.json"
    assert await asyncio.to_thread(main, ["admin", "export", "--format", "servicenow", "--data", str(data),
                                          "--out", str(out)]) == 0
    docs = {d["items"][0]["internal_id"]: d for d in json.loads(out.read_text())}
    db_doc, web_doc = docs["dev-db"], docs["dev-web"]
    assert _named(db_doc) == [("Database", RELATION_DEPENDS, "db1")]
    service = next(i for i in db_doc["items"] if i["className"] == "cmdb_ci_service")
    assert service == {"className": "cmdb_ci_service", "internal_id": "dev-db:rel:service:svc-db",
                       "values": {"name": "Database"}}
    assert _named(web_doc) == [("Payroll", RELATION_DEPENDS, "web1")]
    # Every relation index points at an item of the same payload; the device itself is item 0.
    for doc in (db_doc, web_doc):
        assert all(0 <= r[k] < len(doc["items"]) for r in doc["relations"] for k in ("parent", "child"))
        assert doc["items"][0]["className"] == "cmdb_ci_computer"
