"""The store suite, run against SQLite and PostgreSQL: foundation repositories, CMDB store
functions and the ingest handlers (bad input, duplicates) with a stand-in connection."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest

from protocol.messages import (
    Error,
    HealthAck,
    HealthBatch,
    HealthGap,
    HealthSample,
    InventoryAck,
    InventoryReport,
    InventoryRequest,
    Message,
)
from server import audit, devices
from server.cmdb import alerts, health_store, ingest, inventory_store, settings
from server.cmdb.sections import checksum
from server.enrollment import create_token
from server.store import Database
from tests.conftest import add_device


class FakeServer:
    def __init__(self, db: Database) -> None:
        self.db = db


class FakeConn:
    """Stands in for AgentConnection: records what the handler sends back."""

    def __init__(self, db: Database, device_id: str) -> None:
        self.server = FakeServer(db)
        self.device_id = device_id
        self.group = "lab"
        self.hello = None  # an agent without "health.partial"/"inventory.partial": acks carry no rejected list
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def reply_error(self, code: str, message: str, in_reply_to: str | None) -> None:
        self.sent.append(Error(code=code, message=message, in_reply_to=in_reply_to))


def report(sections: dict[str, Any], *, full: bool, all_sections: dict[str, Any] | None = None) -> InventoryReport:
    everything = all_sections if all_sections is not None else sections
    return InventoryReport(full=full, sections=sections, checksums={k: checksum(v) for k, v in everything.items()})


INVENTORY: dict[str, Any] = {
    "identity": {"hostname": "pc-1", "serial": "SN1", "model": "T14"},
    "os": {"pretty_name": "Debian GNU/Linux 12 (bookworm)", "timezone": {"name": "UTC"}},
    "network": {"interfaces": [{"name": "eth0", "is_up": True, "is_default_route": True,
                                "ipv4": [{"address": "10.0.0.5"}]}]},
    "software": {"sources": ["dpkg"], "packages": [{"name": "openssl", "version": "3.0.11-1", "arch": "amd64"},
                                                   {"name": "curl", "version": "7.88.1-10", "arch": "amd64"}]},
    "security": {"reboot_required": {"required": False}},
}


def samples(seqs: list[int], *, t0: float | None = None, **metrics: Any) -> list[HealthSample]:
    t0 = time.time() - 100 if t0 is None else t0
    base = {"cpu_percent": 5.0, "mem_percent": 40.0, "disks": {"/": 50.0}}
    return [HealthSample(seq=s, ts=t0 + s, metrics={**base, **metrics}) for s in seqs]


# --- foundation repositories -----------------------------------------------------------------


async def test_devices_register_hostname_presence_revoke(db: Database) -> None:
    """Devices: register, hostname, online/offline, revoke (audited) behave the same on both engines."""
    await add_device(db, "d1")
    await devices.set_hostname(db, "d1", "laptop")
    await devices.mark_hello(db, "d1", agent_version="1.0", screen_backend=None)
    row = await devices.get(db, "d1")
    assert row is not None and row["hostname"] == "laptop" and devices.status_of(row) == "online"
    await devices.mark_offline(db, "d1")
    assert devices.status_of(await devices.get(db, "d1") or {}) == "offline"
    assert await devices.revoke(db, "d1", actor="test")
    assert not await devices.revoke(db, "d1", actor="test")
    assert devices.status_of(await devices.get(db, "d1") or {}) == "revoked"


async def test_tokens_and_audit_chain(db: Database) -> None:
    """Tokens are stored hashed with their group; the audit chain verifies and detects tampering."""
    await devices.ensure_group(db, "lab")
    created = await create_token(db, group="lab", ttl_s=60, uses=1, actor="test")
    row = await db.fetchone("SELECT * FROM enrollment_tokens")
    assert row is not None and row["group_name"] == "lab" and created.token not in row["token_hash"]
    for i in range(3):
        await audit.append(db, "test", "thing.done", str(i), {"i": i})
    assert (await audit.verify_chain(db)).ok
    await db.execute("UPDATE audit_log SET target = 'x' WHERE seq = 2")
    report_ = await audit.verify_chain(db)
    assert not report_.ok and report_.first_bad_seq == 2


# --- inventory -------------------------------------------------------------------------------


async def test_full_report_then_delta_records_changes(db: Database) -> None:
    """A full report is stored with the summary; a delta records per-package and per-field changes."""
    dev = await add_device(db)
    conn = FakeConn(db, dev)
    await ingest.on_inventory(conn, report(INVENTORY, full=True))
    assert isinstance(conn.sent[-1], InventoryAck)
    assert await inventory_store.stored_checksums(db, dev) == {k: checksum(v) for k, v in INVENTORY.items()}
    row = await devices.get(db, dev)
    assert row is not None and row["hostname"] == "pc-1"
    summary = await db.fetchone("SELECT * FROM cmdb_devices WHERE device_id = ?", (dev,))
    assert summary is not None and summary["ip"] == "10.0.0.5" and summary["serial"] == "SN1"

    changed = {**INVENTORY, "software": {"sources": ["dpkg"], "packages": [
        {"name": "openssl", "version": "3.0.13-1", "arch": "amd64"},
        {"name": "vim", "version": "9.0", "arch": "amd64"}]},
        "os": {"pretty_name": "Debian GNU/Linux 12 (bookworm)", "timezone": {"name": "Europe/Paris"}}}
    delta = {k: changed[k] for k in ("software", "os")}
    await ingest.on_inventory(conn, report(delta, full=False, all_sections=changed))
    assert isinstance(conn.sent[-1], InventoryAck)
    rows = await inventory_store.changes(db, dev, since=time.time() - 60)
    found = {(r["section"], r["path"], r["change"], r["old_value"], r["new_value"]) for r in rows}
    assert ("software", "openssl:amd64", "changed", "3.0.11-1", "3.0.13-1") in found
    assert ("software", "vim:amd64", "added", None, "9.0") in found
    assert ("software", "curl:amd64", "removed", "7.88.1-10", None) in found
    assert ("os", "timezone.name", "changed", "UTC", "Europe/Paris") in found
    assert {r["name"] for r in await inventory_store.device_software(db, dev)} == {"openssl", "vim"}
    only_os = await inventory_store.changes(db, dev, section="os")
    assert {r["section"] for r in only_os} == {"os"}


async def test_delta_against_stale_server_copy_asks_for_full(db: Database) -> None:
    """When an unsent section's checksum differs from the stored one, the server asks for a full report."""
    dev = await add_device(db)
    conn = FakeConn(db, dev)
    await ingest.on_inventory(conn, report(INVENTORY, full=True))
    before = await inventory_store.get_inventory(db, dev)
    other = {**INVENTORY, "identity": {"hostname": "renamed"}, "os": {"pretty_name": "x"}}
    await ingest.on_inventory(conn, report({"os": other["os"]}, full=False, all_sections=other))
    assert isinstance(conn.sent[-1], InventoryRequest)
    assert await inventory_store.get_inventory(db, dev) == before


@pytest.mark.parametrize("bad", [
    pytest.param(lambda inv: ({**inv, "gadgets": {"a": 1}}, {}), id="unknown-section"),
    pytest.param(lambda inv: ({**inv, "os": ["not", "a", "dict"]}, {}), id="wrong-type"),
    pytest.param(lambda inv: ({**inv, "software": {"packages": [{"name": 5}]}}, {}), id="bad-package"),
    pytest.param(lambda inv: ({**inv, "os": {"notes": "x" * 300_000}}, {}), id="oversized"),
    pytest.param(lambda inv: ({**inv, "os": {"a": 1}}, {"os": "0" * 64}), id="checksum-mismatch"),
])
async def test_bad_inventory_section_is_refused_alone(db: Database, bad: Any) -> None:
    """Unknown sections, wrong types, bad packages, oversized sections, lying checksums: that section keeps
    its stored copy and checksum (acked as such), the report's other changes are stored."""
    dev = await add_device(db)
    conn = FakeConn(db, dev)
    await ingest.on_inventory(conn, report(INVENTORY, full=True))
    before = await inventory_store.get_inventory(db, dev)
    sections, lies = bad({**INVENTORY, "identity": {"hostname": "pc-2", "serial": "SN1", "model": "T14"}})
    msg = InventoryReport(full=True, sections=sections, checksums={k: checksum(v) for k, v in sections.items()} | lies)
    await ingest.on_inventory(conn, msg)
    reply = conn.sent[-1]
    assert isinstance(reply, InventoryAck) and reply.in_reply_to == msg.id
    assert reply.rejected is msgspec.UNSET  # this agent did not announce "inventory.partial"
    after = await inventory_store.get_inventory(db, dev)
    assert after == {**before, "identity": sections["identity"]}
    assert reply.checksums == {k: checksum(v) for k, v in after.items()}


# --- health ----------------------------------------------------------------------------------


async def test_health_duplicates_acked_and_stored_once(db: Database) -> None:
    """A batch sent twice (and overlapping batches) is acknowledged each time and stored once."""
    dev = await add_device(db)
    conn = FakeConn(db, dev)
    first = HealthBatch(samples=samples([1, 2, 3]))
    await ingest.on_health(conn, first)
    await ingest.on_health(conn, first)
    await ingest.on_health(conn, HealthBatch(samples=samples([3, 4, 5])))
    acks = [m for m in conn.sent if isinstance(m, HealthAck)]
    assert [a.up_to for a in acks] == [3, 3, 5]
    assert await health_store.seqs(db, dev) == [1, 2, 3, 4, 5]
    rollup = await db.fetchall("SELECT SUM(n) AS n FROM health_rollups WHERE device_id = ?", (dev,))
    assert rollup[0]["n"] == 5


@pytest.mark.parametrize("batch", [
    pytest.param(lambda: HealthBatch(samples=samples([5, 4])), id="backwards"),
    pytest.param(lambda: HealthBatch(samples=samples([7, 7])), id="repeated"),
    pytest.param(lambda: HealthBatch(samples=samples([8]), gaps=[HealthGap(from_seq=6, to_seq=5, dropped=1)]),
                 id="backwards-gap"),
])
async def test_bad_health_batch_is_refused_whole(db: Database, batch: Any) -> None:
    """Backwards or repeated seqs in a batch, a backwards gap: error reply, nothing stored (wrongly typed
    samples are refused one by one: tests/test_delivery_faults.py)."""
    dev = await add_device(db)
    conn = FakeConn(db, dev)
    await ingest.on_health(conn, HealthBatch(samples=samples([1, 2])))
    msg = batch()
    await ingest.on_health(conn, msg)
    assert isinstance(conn.sent[-1], Error) and conn.sent[-1].code == "invalid"
    assert await health_store.seqs(db, dev) == [1, 2]


async def test_gaps_stored_and_series_from_raw_and_rollups(db: Database) -> None:
    """Gaps are recorded; series averages raw samples per step and uses rollups for long steps."""
    dev = await add_device(db)
    conn = FakeConn(db, dev)
    t0 = 1_000_000_200.0 - 1_000_000_200.0 % 300 + 0.0
    now = t0 + 600
    batch = [HealthSample(seq=i, ts=t0 + i * 60, metrics={"cpu_percent": float(10 * i), "mem_percent": 50.0})
             for i in range(1, 10)]
    await ingest.on_health(conn, HealthBatch(samples=batch, gaps=[HealthGap(from_seq=0, to_seq=0, dropped=1)]))
    assert [(g["from_seq"], g["dropped"]) for g in await health_store.gaps_of(db, dev)] == [(0, 1)]
    raw = await health_store.series(db, dev, start=t0, end=t0 + 300, step=120, now=now)
    assert [p["samples"] for p in raw] == [1, 2, 1]
    assert raw[1]["cpu_avg"] == 25.0
    rolled = await health_store.series(db, dev, start=t0, end=t0 + 900, step=300, now=now)
    assert [p["samples"] for p in rolled] == [4, 5]
    assert rolled[0]["cpu_max"] == 40.0


async def test_retention_drops_old_raw_and_rollups(db: Database) -> None:
    """Raw samples older than 7 days and rollups older than 90 days are deleted."""
    dev = await add_device(db)
    conn = FakeConn(db, dev)
    now = time.time()
    await ingest.on_health(conn, HealthBatch(samples=[HealthSample(seq=1, ts=now - 91 * 86400, metrics={}),
                                                      HealthSample(seq=2, ts=now - 8 * 86400, metrics={}),
                                                      HealthSample(seq=3, ts=now - 10, metrics={})]))
    raw, rolled = await health_store.apply_retention(db, now)
    assert (raw, rolled) == (2, 1)
    assert await health_store.seqs(db, dev) == [3]


# --- alerts ----------------------------------------------------------------------------------


async def test_disk_alert_fires_escalates_dedups_and_resolves(db: Database) -> None:
    """Disk free < 10 % opens one warning, < 5 % makes it critical (same alert), recovery resolves it."""
    dev = await add_device(db)
    conn = FakeConn(db, dev)
    await ingest.on_health(conn, HealthBatch(samples=samples([1], disks={"/": 8.0})))
    await ingest.on_health(conn, HealthBatch(samples=samples([2], disks={"/": 7.0})))
    open_ = await alerts.list_alerts(db, status="open", device_id=dev)
    assert [(a["rule"], a["subject"], a["severity"]) for a in open_] == [("disk_free", "/", "warning")]
    await ingest.on_health(conn, HealthBatch(samples=samples([3], disks={"/": 4.0})))
    open_ = await alerts.list_alerts(db, status="open", device_id=dev)
    assert [a["severity"] for a in open_] == ["critical"]
    row = await db.fetchone("SELECT alerts_open FROM cmdb_devices WHERE device_id = ?", (dev,))
    assert row is not None and row["alerts_open"] == 1
    await ingest.on_health(conn, HealthBatch(samples=samples([4], disks={"/": 40.0})))
    assert await alerts.list_alerts(db, status="open", device_id=dev) == []
    resolved = await alerts.list_alerts(db, status="resolved", device_id=dev)
    assert len(resolved) == 1 and resolved[0]["resolved_at"] is not None


async def test_memory_alert_needs_duration_and_admin_can_change_it(db: Database) -> None:
    """Memory > 90 % fires only after the configured duration; an admin override changes the threshold."""
    dev = await add_device(db)
    conn = FakeConn(db, dev)
    t0 = time.time() - 3600
    high = [HealthSample(seq=i, ts=t0 + i * 60, metrics={"mem_percent": 95.0}) for i in range(1, 6)]
    await ingest.on_health(conn, HealthBatch(samples=high))  # 4 minutes high: not yet
    assert await alerts.list_alerts(db, status="open") == []
    more = [HealthSample(seq=i, ts=t0 + i * 60, metrics={"mem_percent": 95.0}) for i in range(6, 13)]
    await ingest.on_health(conn, HealthBatch(samples=more))  # 11 minutes: fires
    assert [a["rule"] for a in await alerts.list_alerts(db, status="open")] == ["memory_high"]
    await settings.set_rule(db, "memory_high", {"above": 97.0})
    await ingest.on_health(conn, HealthBatch(samples=[HealthSample(seq=13, ts=t0 + 13 * 60,
                                                                   metrics={"mem_percent": 95.0})]))
    assert await alerts.list_alerts(db, status="open") == []
    with pytest.raises(ValueError):
        await settings.set_rule(db, "memory_high", {"colour": 1})


async def test_offline_and_reboot_and_battery_alerts(db: Database) -> None:
    """Agent offline > 24 h, reboot pending > 7 days and degraded battery open alerts; they resolve."""
    dev = await add_device(db)
    now = time.time()
    await db.execute("UPDATE devices SET last_seen = ?, online = 0 WHERE id = ?", (now - 2 * 86400, dev))
    conn = FakeConn(db, dev)
    inv = {**INVENTORY, "battery": {"health_percent": 60.0}, "security": {"reboot_required": {"required": True}}}
    await ingest.on_inventory(conn, report(inv, full=True))
    await db.execute("UPDATE cmdb_devices SET reboot_pending_since = ? WHERE device_id = ?", (now - 8 * 86400, dev))
    await alerts.evaluate_fleet(db, now)
    rules = sorted(a["rule"] for a in await alerts.list_alerts(db, status="open"))
    assert rules == ["agent_offline", "battery_degraded", "reboot_pending"]
    await devices.mark_hello(db, dev, agent_version="1", screen_backend=None)
    fixed = {**INVENTORY, "battery": {"health_percent": 95.0}, "security": {"reboot_required": {"required": False}}}
    await ingest.on_inventory(conn, report(fixed, full=True))
    await alerts.evaluate_fleet(db, time.time())
    assert await alerts.list_alerts(db, status="open") == []
    assert len(await alerts.list_alerts(db, status="resolved")) == 3


def test_server_sections_match_agent_sections() -> None:
    """The server accepts exactly the sections the agent collects."""
    from agent.inventory import SECTIONS
    from server.cmdb.sections import KNOWN_SECTIONS

    assert tuple(KNOWN_SECTIONS) == tuple(SECTIONS)
