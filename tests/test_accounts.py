"""Accounts over real HTTPS: password + TOTP login, cookies, CSRF, lockout, tokens, live sockets, audit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from common.hashing import hash_secret
from server import api, audit
from server.accounts import LOGIN_SERVICE, admin, live, passwords, sessions, totp
from server.accounts.ratelimit import SlidingWindow
from server.auth.rights import Right
from tests.harness import running_server, wait_until
from tests.test_accounts_support import client, cookie_value, login, make_user


def test_password_hash_uses_owasp_scrypt_parameters_and_verifies() -> None:
    """Hashes are scrypt N=2^17 r=8 p=1 with a random salt; only the right password verifies."""
    encoded = passwords.hash_password("correct horse")
    assert encoded.startswith("scrypt$131072$8$1$")
    assert passwords.verify_password("correct horse", encoded)
    assert not passwords.verify_password("correct horsf", encoded)
    assert passwords.hash_password("correct horse") != encoded
    assert not passwords.needs_rehash(encoded)
    assert not passwords.verify_password("x", "garbage")


def test_totp_step_must_advance() -> None:
    """A TOTP code matches its step once; the same step (or an older one) is refused afterwards."""
    secret = totp.new_secret()
    now = time.time()
    code = totp.code_at(secret, now)
    step = totp.matching_step(secret, code, now, 0)
    assert step == int(now) // 30
    assert totp.matching_step(secret, code, now, step) is None
    assert totp.matching_step(secret, "000000" if code != "000000" else "111111", now, 0) is None
    assert totp.matching_step(secret, "12345", now, 0) is None
    assert totp.qr_svg(totp.provisioning_uri(secret, "bob")).startswith("<svg")


def test_sliding_window_limits_and_recovers() -> None:
    """The per-address limiter refuses the attempt over the limit and allows again after the window."""
    clock = [0.0]
    limiter = SlidingWindow(3, 60, clock=lambda: clock[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
    clock[0] = 61
    assert limiter.allow("a")


async def test_login_sets_strict_host_cookie_and_me_reports_rights(tmp_path: Path) -> None:
    """Password+TOTP login sets a __Host- cookie (HttpOnly, Secure, SameSite=Strict, Path=/); /me shows rights."""
    async with running_server(tmp_path / "srv") as server:
        tech = await make_user(server, "tess", "technician", groups={"lab": None})
        async with client(server) as http:
            result = await login(http, tech)
            assert result.status == 200, result.body
            cookie = result.set_cookie
            assert cookie.startswith("__Host-helpline=")
            for attr in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
                assert attr in cookie
            assert "Domain" not in cookie
            async with http.get("/api/v1/auth/me") as resp:
                me = await resp.json()
            assert me["user"]["username"] == "tess"
            assert set(me["rights"]["lab"]) == {"view_inventory", "remote_view", "remote_control", "run_tasks",
                                                "manage_grants"}
            assert me["csrf_token"] == result.csrf
        rows = await audit.recent(server.db, action="auth.login")
        assert rows and rows[0]["actor"] == "tess"


async def test_login_refusals_missing_code_wrong_code_replayed_code(tmp_path: Path) -> None:
    """Login needs the TOTP code; a wrong code fails; a code already used is refused the second time."""
    async with running_server(tmp_path / "srv") as server:
        acct = await make_user(server, "ann", "viewer")
        async with client(server) as http:
            missing = await login(http, acct, code="")
            assert (missing.status, missing.body["error"]["code"]) == (401, "totp_required")
            code = acct.code()
            wrong = await login(http, acct, code=f"{(int(code) + 1) % 1_000_000:06d}")
            assert (wrong.status, wrong.body["error"]["code"]) == (401, "invalid_credentials")
            assert (await login(http, acct, code=code)).status == 200
            replay = await login(http, acct, code=code)
            assert (replay.status, replay.body["error"]["code"]) == (401, "invalid_credentials")
            bad_pw = await login(http, acct, password="nope")
            assert bad_pw.status == 401
        failures = await audit.recent(server.db, action="auth.login_failed")
        assert {f["target"] for f in failures} == {acct.user_id}


async def test_each_login_gets_a_new_session_id_and_logout_ends_it(tmp_path: Path) -> None:
    """A planted cookie is never adopted; logout needs the CSRF token, revokes the session and clears the cookie."""
    async with running_server(tmp_path / "srv") as server:
        acct = await make_user(server, "lee", "viewer")
        async with client(server) as http:
            http.cookie_jar.update_cookies({"__Host-helpline": "attacker-chosen"})
            first = await login(http, acct)
            assert cookie_value(first.set_cookie) != "attacker-chosen"
            second = await login(http, acct, code=acct.code(1))
            assert cookie_value(second.set_cookie) != cookie_value(first.set_cookie)
            async with http.post("/api/v1/auth/logout") as resp:
                assert resp.status == 403 and (await resp.json())["error"]["code"] == "csrf"
            async with http.post("/api/v1/auth/logout", headers={"X-CSRF-Token": first.csrf}) as resp:
                assert resp.status == 403  # the first session's token does not fit the second session
            async with http.post("/api/v1/auth/logout", headers={"X-CSRF-Token": second.csrf}) as resp:
                assert resp.status == 200
                assert "__Host-helpline=\"\"" in resp.headers["Set-Cookie"] or "Max-Age=0" in resp.headers["Set-Cookie"]
        async with client(server) as http2:
            http2.cookie_jar.update_cookies({"__Host-helpline": cookie_value(second.set_cookie)})
            async with http2.get("/api/v1/auth/me") as resp:
                assert resp.status == 401


async def test_idle_and_absolute_session_timeouts(tmp_path: Path) -> None:
    """A session idle for 30 min, or older than 12 h even if active, no longer authenticates."""
    async with running_server(tmp_path / "srv") as server:
        acct = await make_user(server, "ida", "viewer")
        async with client(server) as http:
            first = await login(http, acct)
            sid_row = await server.db.fetchone("SELECT id FROM console_sessions WHERE token_hash = ?",
                                               (hash_secret(cookie_value(first.set_cookie)),))
            assert sid_row is not None
            async with http.get("/api/v1/auth/me") as resp:
                assert resp.status == 200
            await server.db.execute("UPDATE console_sessions SET last_seen = ? WHERE id = ?",
                                    (time.time() - sessions.IDLE_S - 1, sid_row["id"]))
            async with http.get("/api/v1/auth/me") as resp:
                assert resp.status == 401
            await server.db.execute("UPDATE console_sessions SET last_seen = ?, created_at = ? WHERE id = ?",
                                    (time.time(), time.time() - sessions.ABSOLUTE_S - 1, sid_row["id"]))
            async with http.get("/api/v1/auth/me") as resp:
                assert resp.status == 401


async def test_lockout_after_repeated_failures_and_unlock(tmp_path: Path) -> None:
    """Five wrong passwords lock the account (even the right password+code is refused, 423), audited; unlock restores."""
    async with running_server(tmp_path / "srv") as server:
        acct = await make_user(server, "lou", "viewer")
        async with client(server) as http:
            for _ in range(5):
                assert (await login(http, acct, password="wrong-password")).status == 401
            locked = await login(http, acct)
            assert (locked.status, locked.body["error"]["code"]) == (423, "locked")
            assert (await audit.recent(server.db, action="auth.locked"))[0]["target"] == acct.user_id
            await admin.unlock(server.db, "lou", actor="test")
            assert (await login(http, acct)).status == 200


async def test_rate_limit_per_address(tmp_path: Path) -> None:
    """Attempts over the per-address limit get 429 with Retry-After, whatever the username, and are audited."""
    async with running_server(tmp_path / "srv") as server:
        server.console_app[LOGIN_SERVICE].limiter = SlidingWindow(3, 60)
        async with client(server) as http:
            for name in ("a1", "a2", "a3"):
                async with http.post("/api/v1/auth/login", json={"username": name, "password": "x"}) as resp:
                    assert resp.status == 401
            async with http.post("/api/v1/auth/login", json={"username": "a4", "password": "x"}) as resp:
                assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
        assert await audit.recent(server.db, action="auth.rate_limited")


async def test_cross_origin_login_is_refused(tmp_path: Path) -> None:
    """A login POST carrying a foreign Origin header is refused (login CSRF)."""
    async with running_server(tmp_path / "srv") as server:
        acct = await make_user(server, "oli", "viewer")
        async with client(server, Origin="https://evil.example") as http:
            result = await login(http, acct)
            assert (result.status, result.body["error"]["code"]) == (403, "bad_origin")


async def test_totp_enrollment_at_first_login_after_reset(tmp_path: Path) -> None:
    """After reset-totp the password yields a QR code + pending secret; a code from it completes login and enrolls."""
    async with running_server(tmp_path / "srv") as server:
        acct = await make_user(server, "eve", "viewer")
        await admin.reset_totp(server.db, "eve", actor="test")
        async with client(server) as http:
            first = await login(http, acct, code="")
            assert (first.status, first.body["error"]["code"]) == (401, "totp_enrollment_required")
            enrollment = first.body["enrollment"]
            assert enrollment["qr_svg"].startswith("<svg") and enrollment["uri"].startswith("otpauth://totp/")
            acct.totp_secret = enrollment["secret"]
            assert (await login(http, acct)).status == 200
        row = await server.db.fetchone("SELECT totp_secret, totp_pending FROM users WHERE id = ?", (acct.user_id,))
        assert row == {"totp_secret": enrollment["secret"], "totp_pending": None}


async def test_api_tokens_are_hashed_need_no_csrf_and_can_be_revoked(tmp_path: Path) -> None:
    """A Bearer token acts as its user without CSRF; only its hash is stored; revoked or disabled-user tokens fail."""
    async with running_server(tmp_path / "srv") as server:
        await make_user(server, "root", "admin")
        new = await admin.create_token(server.db, "root", "script", None, actor="test")
        stored = await server.db.fetchall("SELECT token_hash FROM api_tokens")
        assert new.token not in str(stored) and stored[0]["token_hash"] == hash_secret(new.token)
        async with client(server, Authorization=f"Bearer {new.token}") as http:
            async with http.post("/api/v1/groups", json={"name": "ops"}) as resp:
                assert resp.status == 201
            await admin.revoke_token(server.db, new.id, actor="test")
            async with http.get("/api/v1/auth/me") as resp:
                assert resp.status == 401
        other = await admin.create_token(server.db, "root", "two", 3600, actor="test")
        await admin.set_disabled(server.db, "root", True, actor="test")
        async with client(server, Authorization=f"Bearer {other.token}") as http:
            async with http.get("/api/v1/auth/me") as resp:
                assert resp.status == 401


async def test_disable_and_session_revocation_close_live_websockets(tmp_path: Path) -> None:
    """Disabling a user (from another 'process' via the event table) or revoking a session closes its websockets."""

    async def probe_ws(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async with live.track(request, ws):
            async for _msg in ws:
                pass
        return ws

    async with running_server(tmp_path / "srv") as server:
        server.console_app.router._frozen = False  # add a probe route to the running app (test only)
        api.add_routes(server.console_app, [api.Route("GET", "/api/v1/test/ws", probe_ws, Right.VIEW_INVENTORY,
                                                      websocket=True)])
        acct = await make_user(server, "wes", "technician", groups={"lab": None})
        url = f"wss://localhost:{server.console_port}/api/v1/test/ws"
        async with client(server) as http:
            await login(http, acct)
            ws1 = await http.ws_connect(url, origin=f"https://localhost:{server.console_port}")
            assert server.console_app[live.LIVE].count(user_id=acct.user_id) == 1
            # A separate database handle stands in for the CLI process: the change travels via the event table.
            from server.store import open_database
            other = await open_database(server.config.db_url)
            try:
                started = time.monotonic()
                await admin.set_disabled(other, "wes", True, actor="cli:test")
            finally:
                await other.close()
            msg = await asyncio.wait_for(ws1.receive(), 5)
            # The close frame carries the code. (ws1.close_code can read 1006 when the client's own close
            # reply races the server closing the transport, so check the frame itself.)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, live.CLOSE_AUTH_ENDED)
            assert time.monotonic() - started < 2.0
            async with http.get("/api/v1/auth/me") as resp:
                assert resp.status == 401
        await admin.set_disabled(server.db, "wes", False, actor="test")
        async with client(server) as http:
            result = await login(http, acct, code=acct.code(1))
            ws2 = await http.ws_connect(url, origin=f"https://localhost:{server.console_port}")
            session_id = result.body and (await (await http.get("/api/v1/auth/me")).json())["session"]["id"]
            await admin.revoke_session(server.db, session_id, actor="test")
            msg = await asyncio.wait_for(ws2.receive(), 5)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, live.CLOSE_AUTH_ENDED)
            await wait_until(lambda: server.console_app[live.LIVE].count(user_id=acct.user_id) == 0, what="removed")


async def test_audit_api_filters_and_verify_detects_altered_row(tmp_path: Path) -> None:
    """GET /api/v1/audit filters by action/actor; /audit/verify reports the first altered record."""
    async with running_server(tmp_path / "srv") as server:
        root = await make_user(server, "root", "admin")
        async with client(server) as http:
            result = await login(http, root)
            headers = {"X-CSRF-Token": result.csrf}
            async with http.post("/api/v1/groups", json={"name": "ops"}, headers=headers) as resp:
                assert resp.status == 201
            async with http.get("/api/v1/audit", params={"action": "group.*"}) as resp:
                items = (await resp.json())["items"]
            assert [i["target"] for i in items] == ["ops"] and items[0]["actor"] == "root"
            async with http.get("/api/v1/audit", params={"actor": "root", "limit": "1"}) as resp:
                page = await resp.json()
            assert len(page["items"]) == 1 and page["next_before"] is not None
            async with http.get("/api/v1/audit/verify") as resp:
                assert (await resp.json())["ok"] is True
            target = items[0]["seq"]
            await server.db.execute("UPDATE audit_log SET details = ? WHERE seq = ?", ('{"forged":1}', target))
            async with http.get("/api/v1/audit/verify") as resp:
                report = await resp.json()
            assert report["ok"] is False and report["first_bad_seq"] == target


@pytest.mark.parametrize("role", ["technician", "viewer"])
async def test_non_admins_cannot_administer(tmp_path: Path, role: str) -> None:
    """Users/groups/audit admin routes refuse (403) anyone without ADMINISTER on all groups."""
    async with running_server(tmp_path / "srv") as server:
        acct = await make_user(server, "nadia", role, groups={"lab": None})
        async with client(server) as http:
            result = await login(http, acct)
            headers = {"X-CSRF-Token": result.csrf}
            for method, path, body in (("GET", "/api/v1/users", None), ("POST", "/api/v1/users",
                                       {"username": "x", "role": "admin"}), ("GET", "/api/v1/audit", None),
                                       ("POST", "/api/v1/groups", {"name": "g"}),
                                       ("POST", f"/api/v1/users/{acct.user_id}/reset-totp", {})):
                async with http.request(method, path, json=body, headers=headers) as resp:
                    assert resp.status == 403, (method, path)


async def test_each_account_action_is_its_own_audited_route(tmp_path: Path) -> None:
    """disable (never oneself), enable, reset-password, reset-totp and unlock each answer on their own route and
    are audited; an action that is not declared answers 404; the reset password then logs in (to TOTP enrollment)."""
    async with running_server(tmp_path / "srv") as server:
        root = await make_user(server, "root", "admin")
        tess = await make_user(server, "tess", "technician")
        async with client(server) as http:
            headers = {"X-CSRF-Token": (await login(http, root)).csrf}

            async def act(user: str, action: str) -> tuple[int, dict[str, Any]]:
                async with http.post(f"/api/v1/users/{user}/{action}", headers=headers) as resp:
                    return resp.status, await resp.json()

            assert await act(root.user_id, "disable") == (
                400, {"error": {"code": "invalid", "message": "you cannot disable your own account"}})
            status, body = await act("tess", "disable")
            assert status == 200 and body["user"]["disabled"] is True
            status, body = await act(tess.user_id, "enable")
            assert status == 200 and body["user"]["disabled"] is False
            status, body = await act("tess", "reset-password")
            assert status == 200 and isinstance(body["password"], str)
            tess.password = body["password"]
            assert await act("tess", "reset-totp") == (200, {"ok": True})
            assert await act("tess", "unlock") == (200, {"ok": True})
            assert (await act("tess", "promote"))[0] == 404
            assert await act("nobody", "unlock") == (404, {"error": {"code": "unknown_user",
                                                                     "message": "no user 'nobody'"}})
        async with client(server) as other:
            result = await login(other, tess, code="")
            assert (result.status, result.body["error"]["code"]) == (401, "totp_enrollment_required")
        for action in ("user.disable", "user.enable", "user.reset_password", "user.reset_totp", "user.unlock"):
            records = await audit.recent(server.db, action=action, target=tess.user_id)
            assert [r["actor"] for r in records] == ["root"], action


def test_admin_user_cli_create_list_grant_disable_reset_and_audit_verify(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI creates an account (password + TOTP URI shown), lists, grants, disables, resets; audit verify catches edits."""
    import re
    import sqlite3

    from helpline.cli import main

    data = tmp_path / "data"
    data.mkdir()
    args = ["--data", str(data)]
    assert main(["admin", "group", "create", "lab", *args]) == 0
    assert main(["admin", "user", "create", "alice", "--role", "technician", "--group", "lab",
                 "--generate-password", *args]) == 0
    out = capsys.readouterr().out
    password = re.search(r"password\s+(\S+)", out)
    assert password and re.search(r"TOTP URI\s+otpauth://totp/Helpline:alice\?secret=", out)
    assert main(["admin", "user", "grant", "alice", "--group", "lab", "--rights", "view_inventory,remote_view",
                 *args]) == 0
    assert main(["admin", "user", "list", *args]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "lab: view_inventory,remote_view" in listing
    assert main(["admin", "user", "grant", "alice", "--group", "lab", "--rights", "fly", *args]) == 2
    assert main(["admin", "user", "create", "alice", "--role", "viewer", "--generate-password", *args]) == 1
    assert main(["admin", "user", "disable", "alice", *args]) == 0
    assert main(["admin", "user", "reset-password", "alice", *args]) == 0
    assert "shown once" in capsys.readouterr().out
    assert main(["admin", "user", "reset-totp", "alice", *args]) == 0
    assert main(["admin", "user", "token", "alice", "--ttl", "1d", *args]) == 0
    assert re.search(r"^hl_\S{20,}$", capsys.readouterr().out, re.M)
    db = sqlite3.connect(data / "helpline.db")
    row = db.execute("SELECT disabled, totp_secret FROM users WHERE username = 'alice'").fetchone()
    assert row == (1, None)
    actions = [r[0] for r in db.execute("SELECT action FROM audit_log ORDER BY seq")]
    assert {"user.create", "user.assign_rights", "user.disable", "user.reset_password", "user.reset_totp",
            "token.create"} <= set(actions)
    assert main(["admin", "audit", "verify", *args]) == 0
    db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    db.commit()
    db.close()
    capsys.readouterr()
    assert main(["admin", "audit", "verify", *args]) == 1
    assert "BROKEN at record 2" in capsys.readouterr().err
