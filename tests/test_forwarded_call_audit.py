"""A forwarded session call that changes something is audited before it runs and its outcome after, failures too.

Runs :func:`server.sessions.calls.run_forwarded` on a real SQLite database with a real account, API token and
session row; the action itself is a stand-in put in ``calls.ACTIONS`` (a failing action, or one that breaks the
audit table as a database fault would), since no real action fails on demand. The audit failures are real ones:
a SQLite trigger refusing inserts into ``audit_log``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from server.accounts import admin, users
from server.sessions import calls
from server.sessions.driver import SessionDriver
from server.store import Database, open_database

BLOCK_AUDIT = ("CREATE TRIGGER audit_down BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit down'); END")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite:///{tmp_path / 'helpline.db'}")
    try:
        await database.execute(
            "INSERT INTO sessions (id, device_id, group_name, technician_user, technician_name, technician_role,"
            " requested_mode, state, token_hash, token_cert_serial, token_expires_at, created_at)"
            " VALUES ('s1', 'd1', 'lab', 'root', 'Root', 'admin', 'view', 'streaming', 'h', 's', 0, 0)")
        yield database
    finally:
        await database.close()


async def _records(db: Database, action: str) -> list[dict[str, Any]]:
    rows = await db.fetchall("SELECT details FROM audit_log WHERE action = ? ORDER BY seq", (action,))
    return [json.loads(r["details"]) for r in rows]


async def _forward(db: Database, action: str) -> tuple[int, dict[str, Any]]:
    await admin.create_account(db, "root", "admin", actor="test", password="x" * 16, with_totp=False,
                               must_change=False)
    token = await admin.create_token(db, "root", "script", 3600, actor="test")
    root = await users.get_row(db, username="root")
    assert root is not None
    return await calls.run_forwarded(cast(SessionDriver, None), db, action=action, session_id="s1",
                                     user_id=root["id"], login_id=None, body=None, token_id=token.id,
                                     from_node="node-a")


async def test_an_action_that_fails_unexpectedly_is_audited_as_500(db: Database,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only ApiError: an action raising anything else leaves a record before and a 500 outcome after."""
    async def broken(sessions: SessionDriver, call: calls.Call) -> calls.Reply:
        raise RuntimeError("agent gone mid-call")

    monkeypatch.setitem(calls.ACTIONS, "end", calls.Action(broken))
    with pytest.raises(RuntimeError):
        await _forward(db, "end")
    assert [(r["action"], r["node"]) for r in await _records(db, "session.call.forwarded")] == [("end", "node-a")]
    assert [(r["action"], r["status"]) for r in await _records(db, "session.call.done")] == [("end", 500)]


async def test_an_action_done_stays_reported_done_when_its_outcome_cannot_be_audited(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit failing after the action: the call answers what the action did, and the record written before
    it stands for it (the old code wrote only after, so the caller saw a failure and no record existed)."""
    done: list[str] = []

    async def end_and_break_audit(sessions: SessionDriver, call: calls.Call) -> calls.Reply:
        done.append(call.session_id)
        await call.db.execute(BLOCK_AUDIT)
        return 200, {"state": "ended"}

    monkeypatch.setitem(calls.ACTIONS, "end", calls.Action(end_and_break_audit))
    assert await _forward(db, "end") == (200, {"state": "ended"})
    assert done == ["s1"]
    assert [r["action"] for r in await _records(db, "session.call.forwarded")] == ["end"]


async def test_no_action_runs_when_its_record_cannot_be_written(db: Database,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The record before the action failing: the call fails and nothing is done."""
    done: list[str] = []

    async def end(sessions: SessionDriver, call: calls.Call) -> calls.Reply:
        done.append(call.session_id)
        return 200, {}

    monkeypatch.setitem(calls.ACTIONS, "end", calls.Action(end))
    root_setup = _forward(db, "end")
    await db.execute(BLOCK_AUDIT.replace("audit_down", "audit_down_early").replace(
        "BEGIN", "WHEN NEW.action = 'session.call.forwarded' BEGIN"))
    with pytest.raises(Exception, match="audit down"):
        await root_setup
    assert done == []
