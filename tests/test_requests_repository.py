"""Support requests in the store (SQLite and PostgreSQL): idempotent open, the transition table, reopen
within 7 days, the event log every change writes, the session link."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import pytest

from protocol import codec
from protocol.errors import InvalidMessage
from protocol.requests import RequestOpen, RequestStatus
from server.errors import ApiError
from server.requests import repository as repo
from server.store import Database
from tests.conftest import add_device

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def new(device_id: str, local_id: str = "a" * 32, **fields: object) -> repo.NewRequest:
    base: dict[str, object] = {"device_id": device_id, "local_id": local_id, "group_name": "lab", "requester": "ann",
                               "summary": "printer offline", "details": "since noon", "urgency": "high",
                               "screenshot": PNG, "diagnostics": [{"code": "disk_full", "severity": "warning",
                                                                   "text": "/ is 97% full"}], "attempt": None}
    base.update(fields)
    return repo.NewRequest(**base)  # type: ignore[arg-type]


async def kinds(db: Database, request_id: str) -> list[str]:
    return [e["kind"] for e in await repo.events_of(db, request_id)]


async def test_open_is_idempotent_and_numbered(db: Database) -> None:
    """The same local_id from the same device gives the same request; numbers increase; an event per change."""
    device = await add_device(db)
    first, created = await repo.open_request(db, new(device))
    again, created_again = await repo.open_request(db, new(device))
    second, _ = await repo.open_request(db, new(device, local_id="b" * 32))
    assert created and not created_again and again["id"] == first["id"]
    assert first["id"].startswith("req-") and second["number"] == first["number"] + 1
    assert first["state"] == "waiting" and first["has_screenshot"] == 1
    assert await repo.screenshot(db, first["id"]) == PNG
    assert (await repo.attachments(db, first["id"]))["diagnostics"][0]["code"] == "disk_full"
    assert await kinds(db, first["id"]) == ["created"]
    audit = await db.fetchall("SELECT action, actor FROM audit_log WHERE target = ?", (first["id"],))
    assert [(a["action"], a["actor"]) for a in audit] == [("request.open", f"device:{device}")]


async def test_transitions_and_reopen_window(db: Database) -> None:
    """claim → resolve → reopen within 7 days; a wrong transition is a 409; reopening after 7 days is refused."""
    device = await add_device(db)
    row, _ = await repo.open_request(db, new(device))
    rid = row["id"]
    claimed = await repo.transition(db, rid, "claim", actor="tech", actor_name="Tess Tech")
    assert claimed["state"] == "claimed" and claimed["claimed_by_name"] == "Tess Tech" and claimed["claimed_at"]
    with pytest.raises(ApiError) as refused:
        await repo.transition(db, rid, "claim", actor="other")
    assert refused.value.status == 409
    resolved = await repo.transition(db, rid, "resolve", actor="tech", category="printer", notes="driver")
    assert resolved["state"] == "resolved" and resolved["category"] == "printer"
    reopened = await repo.transition(db, rid, "reopen", actor="tech")
    assert reopened["state"] == "waiting" and reopened["reopened_count"] == 1
    await repo.transition(db, rid, "resolve", actor="tech", category="printer")
    with pytest.raises(ApiError) as late:
        await repo.transition(db, rid, "reopen", actor="tech", now=time.time() + 8 * 86400)
    assert late.value.code == "too_late"
    assert await kinds(db, rid) == ["created", "claimed", "resolved", "reopened", "resolved"]


async def test_user_adding_reopens_and_session_recorded(db: Database) -> None:
    """The user adding to a resolved request reopens it; the first session sets first_session_at once."""
    device = await add_device(db)
    row, _ = await repo.open_request(db, new(device, attempt={"fix_id": "fix-dns", "title": "Flush DNS",
                                                              "outcome": "didnt_help", "detail": ""}))
    rid = row["id"]
    assert row["escalated"] == 1
    await repo.record_session(db, rid, session_id="s1", actor="tech")
    first = (await repo.get(db, rid) or {})["first_session_at"]
    await repo.record_session(db, rid, session_id="s2", actor="tech")
    assert first is not None and (await repo.get(db, rid) or {})["first_session_at"] == first
    await repo.transition(db, rid, "resolve", actor="tech", category="network")
    after = await repo.add_note(db, rid, actor=f"device:{device}", text="still broken", from_device=True)
    assert after["state"] == "waiting" and after["reopened_count"] == 1
    note = await repo.add_note(db, rid, actor="tech", text="on it", from_device=False)
    assert note["last_note"] == "on it"
    assert await kinds(db, rid) == ["created", "escalated", "session", "session", "resolved", "note", "reopened",
                                    "note"]
    published = await db.fetchall("SELECT payload FROM events WHERE kind = ? AND subject = ?",
                                  (repo.REQUEST_CHANGED, rid))
    assert [json.loads(p["payload"])["kind"] for p in published][-2:] == ["reopened", "note"]


def test_protocol_limits() -> None:
    """request.open refuses an oversized screenshot, too many diagnostics, a bad local_id; status round-trips."""
    ok = RequestOpen(local_id="c" * 32, summary="x", screenshot=PNG)
    assert isinstance(codec.decode(codec.encode(ok)), RequestOpen)
    raw = json.loads(codec.encode(ok))
    for bad in ({"local_id": "../x"}, {"summary": ""}, {"summary": "s" * 201}, {"urgency": "panic"},
                {"diagnostics": [{"code": "x", "severity": "info", "text": "t"}] * 33},
                {"screenshot": msgspec.json.decode(msgspec.json.encode(b"\x89PNG\r\n\x1a\n" * (262145)))}):
        with pytest.raises(InvalidMessage):
            codec.decode(json.dumps({**raw, **bad}))
    status = RequestStatus(local_id="c" * 32, request_id="req-1", number=3, state="claimed", claimed_by="Tess")
    assert codec.decode(codec.encode(status)) == status


async def test_concurrent_resends_of_one_open_make_one_request(db: Database) -> None:
    """Resends of one local_id racing each other (two connections, two nodes): one request, every caller gets it,
    none fails on the UNIQUE constraint."""
    device = await add_device(db)
    results = await asyncio.gather(*(repo.open_request(db, new(device)) for _ in range(6)))
    assert sum(created for _, created in results) == 1
    assert {row["id"] for row, _ in results} == {results[0][0]["id"]}
    assert (await db.fetchone("SELECT COUNT(*) AS n FROM support_requests")) == {"n": 1}


async def test_closed_lists_are_newest_first_and_paged(db: Database) -> None:
    """Closed requests come newest first (the recent ones were lost behind 500 old ones), can be limited to those
    resolved since a time (the reopen list), and paged; the open queue stays oldest first."""
    device = await add_device(db)
    now = time.time()
    ids = []
    for i in range(5):
        row, _ = await repo.open_request(db, new(device, local_id=f"{i:032x}"))
        await db.execute("UPDATE support_requests SET created_at = ? WHERE id = ?", (now - 100 + i, row["id"]))
        await repo.transition(db, row["id"], "resolve", actor="tech", category="x",
                              now=now - (10 - i) * 86400 if i < 2 else now - 60 + i)
        ids.append(row["id"])
    newest = await repo.list_requests(db, states=[repo.RESOLVED], newest_first=True, limit=2)
    assert [r["id"] for r in newest] == [ids[4], ids[3]]
    rest = await repo.list_requests(db, states=[repo.RESOLVED], newest_first=True, limit=2, offset=2)
    assert [r["id"] for r in rest] == [ids[2], ids[1]]
    recent = await repo.list_requests(db, states=[repo.RESOLVED], resolved_since=now - repo.REOPEN_WINDOW_S,
                                      newest_first=True)
    assert [r["id"] for r in recent] == [ids[4], ids[3], ids[2]]
    assert [r["id"] for r in await repo.list_requests(db, limit=2)] == ids[:2]
