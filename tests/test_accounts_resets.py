"""Resets end every credential: a password or TOTP reset revokes the user's API tokens and console sessions;
administrators list and revoke anyone's tokens (API and CLI), audited."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from server import audit
from server.accounts import admin
from tests.harness import running_server
from tests.test_accounts_support import client, login, make_user


async def _status(server, path: str = "/api/v1/auth/me", **headers: str) -> int:  # type: ignore[no-untyped-def]
    async with client(server, **headers) as http, http.get(path) as resp:
        return resp.status


@pytest.mark.parametrize("action", ["reset-password", "reset-totp"])
async def test_admin_reset_revokes_the_users_tokens_and_sessions(tmp_path: Path, action: str) -> None:
    """After an admin's reset-password or reset-totp, the user's Bearer token and cookie session both get 401."""
    async with running_server(tmp_path / "srv") as server:
        root = await make_user(server, "root", "admin")
        tess = await make_user(server, "tess", "technician", groups={"lab": None})
        token = (await admin.create_token(server.db, "tess", "script", None, actor="test")).token
        async with client(server) as tess_http, client(server) as root_http:
            assert (await login(tess_http, tess)).status == 200
            async with tess_http.get("/api/v1/auth/me") as resp:
                assert resp.status == 200
            assert await _status(server, Authorization=f"Bearer {token}") == 200
            csrf = (await login(root_http, root)).csrf
            async with root_http.post(f"/api/v1/users/tess/{action}", headers={"X-CSRF-Token": csrf}) as resp:
                assert resp.status == 200, await resp.text()
            async with tess_http.get("/api/v1/auth/me") as resp:
                assert resp.status == 401
        assert await _status(server, Authorization=f"Bearer {token}") == 401
        record = (await audit.recent(server.db, action=f"user.{action.replace('-', '_')}", target=tess.user_id))[0]
        details = json.loads(record["details"])
        assert (details["tokens_revoked"], details["sessions_ended"]) == (1, 1)


async def test_admin_lists_and_revokes_a_users_tokens(tmp_path: Path) -> None:
    """GET /users/{id}/tokens lists a user's tokens (never values or hashes); revoke ends one, audited; another
    user's token id under this user's path, a second revoke, and non-admins are refused."""
    async with running_server(tmp_path / "srv") as server:
        root = await make_user(server, "root", "admin")
        await make_user(server, "tess", "technician", groups={"lab": None})
        await make_user(server, "otto", "viewer")
        keep = await admin.create_token(server.db, "tess", "keep", None, actor="test")
        drop = await admin.create_token(server.db, "tess", "drop", 3600, actor="test")
        foreign = await admin.create_token(server.db, "otto", "otto's", None, actor="test")
        async with client(server) as http:
            headers = {"X-CSRF-Token": (await login(http, root)).csrf}
            async with http.get("/api/v1/users/tess/tokens") as resp:
                assert resp.status == 200
                listed = await resp.json()
            assert {t["name"] for t in listed["items"]} == {"keep", "drop"}
            assert keep.token not in str(listed) and "token_hash" not in str(listed)
            async with http.post(f"/api/v1/users/tess/tokens/{foreign.id}/revoke", headers=headers) as resp:
                assert resp.status == 404
            async with http.post(f"/api/v1/users/tess/tokens/{drop.id}/revoke", headers=headers) as resp:
                assert (resp.status, await resp.json()) == (200, {"revoked": True})
            async with http.post(f"/api/v1/users/tess/tokens/{drop.id}/revoke", headers=headers) as resp:
                assert resp.status == 404
            async with http.get("/api/v1/users/nobody/tokens") as resp:
                assert resp.status == 404
        assert await _status(server, Authorization=f"Bearer {drop.token}") == 401
        assert await _status(server, Authorization=f"Bearer {keep.token}") == 200
        assert await _status(server, Authorization=f"Bearer {foreign.token}") == 200
        records = await audit.recent(server.db, action="token.revoke", target=drop.id)
        assert [r["actor"] for r in records] == ["root"]
        assert await _status(server, "/api/v1/users/tess/tokens", Authorization=f"Bearer {keep.token}") == 403


def test_cli_lists_and_revokes_a_users_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`admin user tokens NAME` lists ids and labels; `admin user token-revoke NAME ID` revokes (once), audited."""
    import sqlite3

    from helpline.cli import main

    (tmp_path / "data").mkdir()
    args = ["--data", str(tmp_path / "data")]
    assert main(["admin", "user", "create", "alice", "--role", "viewer", "--generate-password", *args]) == 0
    assert main(["admin", "user", "token", "alice", "--label", "nightly", *args]) == 0
    token_id = re.search(r"API token (t_[0-9a-f]+)", capsys.readouterr().out)
    assert token_id
    assert main(["admin", "user", "tokens", "alice", *args]) == 0
    listing = capsys.readouterr().out
    assert token_id.group(1) in listing and "nightly" in listing and "active" in listing
    assert main(["admin", "user", "token-revoke", "alice", token_id.group(1), *args]) == 0
    assert main(["admin", "user", "token-revoke", "alice", token_id.group(1), *args]) == 1
    assert main(["admin", "user", "tokens", "alice", *args]) == 0
    assert "revoked" in capsys.readouterr().out
    db = sqlite3.connect(tmp_path / "data" / "helpline.db")
    try:
        assert db.execute("SELECT revoked_at IS NOT NULL FROM api_tokens WHERE id = ?",
                          (token_id.group(1),)).fetchone() == (1,)
        assert db.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'token.revoke'").fetchone() == (1,)
    finally:
        db.close()
