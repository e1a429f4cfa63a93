"""Session notes: who may write them, limits, audit, and how they reach the device's session history.

Sessions are inserted straight into the store (no agent needed: notes do not care how a session
ran); the API runs on a real server, so ``HELPLINE_TEST_STORE=postgresql`` runs it on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

from aiohttp import web

from server import audit
from server.api.context import AUTHENTICATORS
from server.app import HelplineServer
from server.auth.rights import ANY_GROUP, ROLE_RIGHTS, Principal
from server.sessions import notes, repository, views
from server.store import Database
from tests.conftest import add_device
from tests.harness import running_server
from tests.test_accounts_support import client, login, make_user
from tests.test_session_helpers import api, install_test_auth

TOM = Principal("u9", "tom", "technician", {ANY_GROUP: ROLE_RIGHTS["technician"]})


async def insert_session(db: Database, device_id: str, technician: str, *, state: str = "ended") -> str:
    """A finished session row, as the session manager leaves it."""
    sid = uuid.uuid4().hex
    now = time.time()
    await db.execute(
        "INSERT INTO sessions (id, device_id, group_name, technician_user, technician_name, technician_role,"
        " requested_mode, mode, reason, state, token_hash, token_cert_serial, token_expires_at, created_at,"
        " answered_at, answered_by, started_at, ended_at, end_reason, ended_by)"
        " VALUES (?, ?, 'lab', ?, ?, 'technician', 'control', 'control', 'ticket 42', ?, 'x', 'y', ?, ?, ?, 'user',"
        " ?, ?, 'technician', 'technician')",
        (sid, device_id, technician, technician, state, now + 60, now - 120, now - 110, now - 100, now - 10))
    return sid


def install_tom(server: HelplineServer) -> None:
    """A second technician with rights on every group (the session's author is ``ann``)."""
    async def authenticate(request: web.Request) -> Principal | None:
        return TOM if request.headers.get("X-Test-User") == "tom" else None

    server.console_app[AUTHENTICATORS].append(authenticate)


async def note_audits(server: HelplineServer) -> list[dict[str, Any]]:
    return await audit.recent(server.db, limit=50, action="session.notes.update")


async def test_author_writes_notes_seen_in_the_device_history_and_audited(tmp_path: Any) -> None:
    """The session's technician writes notes; the device's session list and the session carry them; audit has hash+length."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        device = await add_device(server.db, "dev-notes", "lab")
        sid = await insert_session(server.db, device, "ann")
        text = "Reset the print spooler.\nTicket #1234 <script>alert(1)</script>"
        status, body = await api(server, "PUT", f"/api/v1/sessions/{sid}/notes", "ann", {"text": text})
        assert status == 200, body
        assert body["notes"]["text"] == text and body["notes"]["author"] == "ann" and body["notes"]["revision"] == 1
        status, listing = await api(server, "GET", f"/api/v1/devices/{device}/sessions", "ann")
        assert status == 200
        (item,) = listing["sessions"]
        assert item["notes"]["text"] == text and item["notes"]["author"] == "ann"
        assert abs(item["notes"]["updated_at"] - time.time()) < 30
        assert item["answered_by"] == "user" and item["end_reason"] == "technician" and item["mode"] == "control"
        status, one = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
        assert status == 200 and one["notes"]["text"] == text
        (record,) = await note_audits(server)
        assert record["actor"] == "ann" and record["target"] == device
        details = json.loads(record["details"])
        assert details["sha256"] == hashlib.sha256(text.encode()).hexdigest()
        assert details["length"] == len(text) and details["session_id"] == sid
        assert "spooler" not in record["details"]
        status, body = await api(server, "PUT", f"/api/v1/sessions/{sid}/notes", "ann", {"text": "shorter"})
        assert status == 200 and body["notes"]["revision"] == 2
        assert len(await note_audits(server)) == 2
        assert (await audit.verify_chain(server.db)).ok


async def test_only_the_sessions_technician_or_an_admin_may_write(tmp_path: Any) -> None:
    """Another technician and a viewer get 403, a technician of another group the 404 of a missing session;
    an admin may write."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        install_tom(server)
        device = await add_device(server.db, "dev-notes", "lab")
        sid = await insert_session(server.db, device, "ann")
        for user in ("tom", "vic"):
            status, body = await api(server, "PUT", f"/api/v1/sessions/{sid}/notes", user, {"text": "mine now"})
            assert status == 403 and body["error"]["code"] == "forbidden", (user, body)
        status, body = await api(server, "PUT", f"/api/v1/sessions/{sid}/notes", "bob", {"text": "mine now"})
        missing = await api(server, "PUT", "/api/v1/sessions/nope/notes", "bob", {"text": "mine now"})
        assert (status, body) == missing and status == 404, body  # another group's session cannot be probed
        status, _ = await api(server, "PUT", f"/api/v1/sessions/{sid}/notes", "nobody", {"text": "x"})
        assert status == 401
        assert await note_audits(server) == []
        status, listing = await api(server, "GET", f"/api/v1/devices/{device}/sessions", "ann")
        assert listing["sessions"][0]["notes"] is None
        status, body = await api(server, "PUT", f"/api/v1/sessions/{sid}/notes", "root", {"text": "admin follow-up"})
        assert status == 200 and body["notes"]["author"] == "root"
        # A live (not yet ended) session takes notes too.
        running = await insert_session(server.db, device, "ann", state="streaming")
        status, body = await api(server, "PUT", f"/api/v1/sessions/{running}/notes", "ann", {"text": "in progress"})
        assert status == 200, body


async def test_oversized_or_malformed_notes_are_refused(tmp_path: Any) -> None:
    """More than 8000 characters, a non-string, NUL or a non-object body: 400 and nothing stored or audited."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        device = await add_device(server.db, "dev-notes", "lab")
        sid = await insert_session(server.db, device, "ann")
        path = f"/api/v1/sessions/{sid}/notes"
        for bad in ({"text": "x" * (notes.MAX_NOTES_CHARS + 1)}, {"text": 5}, {}, {"text": "a\x00b"}, ["text"]):
            status, body = await api(server, "PUT", path, "ann", bad)
            assert status == 400 and body["error"]["code"] == "invalid", (bad, body)
        assert await note_audits(server) == []
        status, _ = await api(server, "PUT", "/api/v1/sessions/nope/notes", "ann", {"text": "x"})
        assert status == 404
        full = "é" * notes.MAX_NOTES_CHARS  # the limit is in characters, not bytes
        status, body = await api(server, "PUT", path, "ann", {"text": full})
        assert status == 200 and body["notes"]["text"] == full


async def test_cookie_session_needs_the_csrf_token(tmp_path: Any) -> None:
    """A logged-in technician's PUT without X-CSRF-Token is refused; with it, the notes are stored."""
    async with running_server(tmp_path / "srv") as server:
        tess = await make_user(server, "tess", "technician", groups={"lab": None})
        device = await add_device(server.db, "dev-notes", "lab")
        sid = await insert_session(server.db, device, "tess")
        async with client(server) as http:
            session = await login(http, tess)
            assert session.status == 200
            async with http.put(f"/api/v1/sessions/{sid}/notes", json={"text": "no token"}) as resp:
                assert resp.status == 403 and (await resp.json())["error"]["code"] == "csrf"
            async with http.put(f"/api/v1/sessions/{sid}/notes", json={"text": "with token"},
                                headers={"X-CSRF-Token": session.csrf}) as resp:
                assert resp.status == 200, await resp.text()
        (record,) = await note_audits(server)
        assert record["actor"] == "tess"


async def test_store_upserts_one_row_per_session(db: Database) -> None:
    """Saving twice keeps one row (revision 2, latest author) and the listing join returns it; on both engines."""
    device = await add_device(db, "dev-notes", "lab")
    sid = await insert_session(db, device, "ann")
    other = await insert_session(db, device, "ann")
    row = await db.fetchone("SELECT * FROM sessions WHERE id = ?", (sid,))
    assert row is not None
    await notes.save(db, row, "ann", "first")
    saved = await notes.save(db, row, "root", "second")
    assert saved["revision"] == 2
    rows = {r["id"]: r for r in await repository.list_for_device(db, device)}
    assert views.notes_view(rows[sid]) == {"text": "second", "author": "root", "updated_at": saved["updated_at"],
                                         "revision": 2}
    assert views.notes_view(rows[other]) is None
    count = await db.fetchone("SELECT COUNT(*) AS n FROM session_notes")
    assert count is not None and count["n"] == 1
