"""Recordings keep the screen, never what the technician typed; they are private on disk and readable
only by the session's technician and holders of ``view_recordings`` (auditors); the SQLite store
(password hashes, TOTP secrets) is private to the server's user."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from agent.consent.scripted import ScriptedConsentUI
from server.auth.rights import ANY_GROUP, Principal, Right
from server.sessions import SESSIONS
from server.sessions.relay import RECORD_HEADER
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.sealed_files import plain
from tests.test_session_helpers import PRINCIPALS, api, configure_agent, install_test_auth, viewer_for
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

SECRET = "hunter2-Correct-Horse"


def _records(path: Path) -> list[tuple[int, bool, bytes]]:
    """(direction, binary, payload) of every complete record of an ``.hlrec`` file."""
    data, out, off = plain(path), [], 0
    while off + RECORD_HEADER.size <= len(data):
        _t, direction, binary, length = RECORD_HEADER.unpack_from(data, off)
        start = off + RECORD_HEADER.size
        if start + length > len(data):
            break
        out.append((direction, bool(binary), data[start:start + length]))
        off = start + length
    return out


def _technician_messages(path: Path) -> list[dict[str, Any]]:
    return [json.loads(p) for d, b, p in _records(path) if d == 1 and not b]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_recording_holds_no_typed_input_and_is_private(tmp_path: Path, xvfb: XvfbHandle,  # noqa: F811
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Typed text and key codes never reach the recording (mouse positions and key up/down without the key do);
    the file and its metadata are 0600 in a 0700 directory; only the technician and auditors may fetch it."""
    monkeypatch.setitem(PRINCIPALS, "aud", Principal("u9", "aud", "viewer", {ANY_GROUP: Right.VIEW_RECORDINGS}))
    rec = tmp_path / "rec"
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        manager = server.console_app[SESSIONS]
        manager.settings.record = True
        manager.settings.recordings_dir = rec
        state = await enroll_agent(server, tmp_path / "a")
        async with running_agent(state, setup=configure_agent(xvfb.display, ScriptedConsentUI([True]))) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            status, body = await api(server, "POST", f"/api/v1/devices/{state.device_id}/sessions", "ann",
                                     {"mode": "control"})
            assert status == 201, body
            sid = body["session_id"]
            hlrec = rec / f"{sid}.hlrec"
            async with viewer_for(server, sid) as viewer:
                await viewer.wait_for_updates(1, 15)
                await viewer.send_text(SECRET)
                await viewer.press_key("KeyQ")
                await viewer.send_mouse(123, 45)  # sent last: once it is recorded, everything before was seen
                await wait_until(lambda: hlrec.exists() and any(
                    m.get("type") == "input.mouse" and m.get("x") == 123 for m in _technician_messages(hlrec)),
                    what="the last input in the recording")
            status, _ = await api(server, "POST", f"/api/v1/sessions/{sid}/end", "ann")
            assert status == 200
            await wait_until(lambda: (rec / f"{sid}.json").exists(), what="recording metadata")

        raw = plain(hlrec, partial=False)  # sealed at rest: plain() fails on a file in the clear
        assert SECRET.encode() not in raw and b"KeyQ" not in raw
        typed = _technician_messages(hlrec)
        assert {m["type"] for m in typed} <= {"input.mouse", "input.key"}
        keys = [m for m in typed if m["type"] == "input.key"]
        assert [k["action"] for k in keys] == ["down", "up"] and all(set(k) == {"type", "action"} for k in keys)
        assert any(d == 0 and b for d, b, _ in _records(hlrec))  # the screen is there
        assert _mode(rec) == 0o700 and _mode(hlrec) == 0o600 and _mode(rec / f"{sid}.json") == 0o600

        info, data = f"/api/v1/sessions/{sid}/recording", f"/api/v1/sessions/{sid}/recording/data"
        for user, expected in (("ann", 200), ("aud", 200), ("root", 200), ("vic", 403), ("bob", 404)):
            assert (await api(server, "GET", info, user))[0] == expected, user
        status, body = await api(server, "GET", data, "vic")
        assert status == 403 and body["error"]["code"] == "forbidden"


async def test_sqlite_store_is_private_to_the_server_user(tmp_path: Path) -> None:
    """helpline.db (password hashes, TOTP secrets) and its WAL are 0600 and the data directory 0700 — also
    when an older install left them readable by everyone."""
    data = tmp_path / "srv"
    sqlite = {"database_url": f"sqlite:///{data / 'helpline.db'}"}
    async with running_server(data, **sqlite) as server:
        await server.db.execute("CREATE TABLE IF NOT EXISTS probe (x INTEGER)")
        assert _mode(data / "helpline.db") == 0o600 and _mode(data) == 0o700
        for extra in ("helpline.db-wal", "helpline.db-shm"):
            if (data / extra).exists():
                assert _mode(data / extra) == 0o600, extra
    os.chmod(data / "helpline.db", 0o644)
    os.chmod(data, 0o755)
    async with running_server(data, **sqlite):
        assert _mode(data / "helpline.db") == 0o600 and _mode(data) == 0o700
    with sqlite3.connect(data / "helpline.db") as conn:  # still the same, readable database
        assert conn.execute("SELECT COUNT(*) FROM audit_log").fetchone() is not None
