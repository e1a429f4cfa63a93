"""Generated passwords are changed at first login: until then every route but the password change, /auth/me and
logout answers 403 password_change_required; the own change revokes tokens and the other sessions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from server import audit
from server.accounts import admin
from tests.harness import running_server
from tests.test_accounts_support import Account, client, login, make_user


async def _call(http: aiohttp.ClientSession, method: str, path: str, csrf: str = "",
                body: Any = None) -> tuple[int, Any]:
    headers = {"X-CSRF-Token": csrf} if csrf else {}
    async with http.request(method, path, json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def _enroll_and_login(http: aiohttp.ClientSession, account: Account) -> dict[str, Any]:
    """First login of an account made without TOTP: enroll from the offered secret, then log in."""
    first = await login(http, account, code="")
    assert first.body["error"]["code"] == "totp_enrollment_required", first.body
    account.totp_secret = first.body["enrollment"]["secret"]
    done = await login(http, account)
    assert done.status == 200, done.body
    return done.body


async def test_generated_password_gates_every_route_until_changed(tmp_path: Path) -> None:
    """An account created with a generated password logs in restricted: other routes answer 403
    password_change_required (websocket and Bearer-token creation included); a weak, unchanged or wrongly confirmed
    change is refused; after the change everything its rights allow works and the old password is dead. An admin's
    reset-password restricts it again."""
    async with running_server(tmp_path / "srv") as server:
        root = await make_user(server, "root", "admin")
        async with client(server) as admin_http:
            admin_csrf = (await login(admin_http, root)).csrf
            status, created = await _call(admin_http, "POST", "/api/v1/users", admin_csrf,
                                          {"username": "nina", "role": "technician"})
            assert status == 201 and created["user"]["must_change_password"] is True
        nina = Account("nina", created["password"], "", created["user"]["id"])
        async with client(server) as http:
            body = await _enroll_and_login(http, nina)
            assert body["user"]["must_change_password"] is True
            csrf = body["csrf_token"]
            for method, path, payload in (("GET", "/api/v1/groups", None), ("GET", "/api/v1/devices", None),
                                          ("GET", "/api/v1/auth/tokens", None),
                                          ("POST", "/api/v1/auth/tokens", {"name": "sneaky"}),
                                          ("GET", "/api/v1/auth/sessions", None)):
                status, refused = await _call(http, method, path, csrf, payload)
                assert (status, refused["error"]["code"]) == (403, "password_change_required"), (method, path)
            ws_url = f"wss://localhost:{server.console_port}/api/v1/sessions/s-x/stream"
            try:
                await http.ws_connect(ws_url, origin=f"https://localhost:{server.console_port}")
                raise AssertionError("the websocket upgrade was accepted")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 403
            status, me = await _call(http, "GET", "/api/v1/auth/me")
            assert status == 200 and me["user"]["must_change_password"] is True
            change = "/api/v1/auth/password"
            for current, new, code in ((nina.password, "short", "weak_password"),
                                       (nina.password, nina.password, "weak_password"),
                                       ("not-the-password", "a-brand-new-passphrase", "wrong_password")):
                status, refused = await _call(http, "POST", change, csrf,
                                              {"current_password": current, "new_password": new})
                assert refused["error"]["code"] == code and status in (400, 403), refused
            status, changed = await _call(http, "POST", change, csrf, {"current_password": nina.password,
                                                                       "new_password": "a-brand-new-passphrase"})
            assert status == 200 and changed["user"]["must_change_password"] is False, changed
            assert (await _call(http, "GET", "/api/v1/groups"))[0] == 200
        old = nina.password
        nina.password = "a-brand-new-passphrase"
        async with client(server) as http:
            assert (await login(http, nina, password=old)).status == 401
            fresh = await login(http, nina, code=nina.code(1))
            assert fresh.status == 200 and fresh.body["user"]["must_change_password"] is False
        records = await audit.recent(server.db, action="user.change_password", target=nina.user_id)
        assert [r["actor"] for r in records] == ["nina"]
        await admin.reset_password(server.db, "nina", actor="test")
        row = await server.db.fetchone("SELECT must_change_password FROM users WHERE id = ?", (nina.user_id,))
        assert row == {"must_change_password": 1}


async def test_own_password_change_ends_tokens_and_other_sessions(tmp_path: Path) -> None:
    """Changing one's own password keeps the session that did it, ends the others and revokes every API token."""
    async with running_server(tmp_path / "srv") as server:
        tess = await make_user(server, "tess", "technician", groups={"lab": None})
        token = (await admin.create_token(server.db, "tess", "script", None, actor="test")).token
        async with client(server) as here, client(server) as elsewhere, \
                client(server, Authorization=f"Bearer {token}") as bearer:
            csrf = (await login(here, tess)).csrf
            assert (await login(elsewhere, tess, code=tess.code(1))).status == 200
            assert (await _call(bearer, "GET", "/api/v1/auth/me"))[0] == 200
            status, body = await _call(here, "POST", "/api/v1/auth/password", csrf,
                                       {"current_password": tess.password, "new_password": "tess-new-passphrase"})
            assert status == 200, body
            assert (await _call(here, "GET", "/api/v1/auth/me"))[0] == 200
            assert (await _call(elsewhere, "GET", "/api/v1/auth/me"))[0] == 401
            assert (await _call(bearer, "GET", "/api/v1/auth/me"))[0] == 401
        record = (await audit.recent(server.db, action="user.change_password", target=tess.user_id))[0]
        assert json.loads(record["details"])["tokens_revoked"] == 1
        assert json.loads(record["details"])["sessions_ended"] == 1
