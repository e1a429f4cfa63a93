"""Calls and session starts routed from node A to node C: C re-checks the login behind them and names the token.

Two real nodes on one PostgreSQL and a real nats-server (tests/test_multinode_bus.py), a real agent on Xvfb
held by C. The call made through A's API is forwarded with the token's id; C audits it naming the token. A
login ended after A checked it (the window the re-check closes) is simulated by sending, on A's own bus
connection, a call or a session start under it (token revoked, expired or another user's; cookie session
revoked or past its absolute limit; none named): C refuses each and audits the refusal. Needs
HELPLINE_TEST_PG_URL, nats-server and Xvfb; fails without them.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.consent.scripted import ScriptedConsentUI
from server.accounts import admin, users
from server.accounts import sessions as console_sessions
from server.app import HelplineServer
from server.bus.routing import Holder, NodeCall, RoutedSession
from server.errors import ApiError
from server.sessions import SESSIONS
from tests.harness import enroll_agent, running_agent, wait_until
from tests.nats_server import nats_server
from tests.test_multinode_bus import _ctx, two_nodes
from tests.test_session_helpers import configure_agent
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


async def _audit(node: HelplineServer, action: str) -> list[dict[str, Any]]:
    rows = await node.db.fetchall("SELECT actor, target, details FROM audit_log WHERE action = ? ORDER BY seq",
                                  (action,))
    return [{"actor": r["actor"], "target": r["target"], **json.loads(r["details"])} for r in rows]


async def _call(http: aiohttp.ClientSession, node: HelplineServer, method: str, path: str,
                token: str) -> tuple[int, Any]:
    async with http.request(method, f"https://localhost:{node.console_port}/api/v1{path}", ssl=_ctx(node),
                            headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json(content_type=None)


def _expected(login: dict[str, Any]) -> tuple[int, str]:
    """A request naming no login came through an older node (a rolling upgrade): its own code, not an ended login."""
    return (403, "login_ended") if login else (409, "routing_node_too_old")


async def test_forwarded_token_call_is_rechecked_and_audited_on_the_holder(tmp_path: Path,
                                                                           xvfb: XvfbHandle) -> None:  # noqa: F811
    """End through A with a token: C names the token in its audit; a call or a session start forwarded to C under
    a login that has ended (token revoked, expired or another user's; cookie login revoked or past its absolute
    limit) is refused there (403 login_ended) and audited; one naming no login (an older routing node's) is refused
    409 routing_node_too_old, audited too; the session goes on, none is started."""
    with nats_server(tmp_path / "nats") as nats:
        async with two_nodes(tmp_path, nats) as (a, c):
            assert a.bus is not None and c.bus is not None
            await admin.create_account(a.db, "root", "admin", actor="test", password="x" * 16, with_totp=False,
                                       must_change=False)
            good = await admin.create_token(a.db, "root", "script", 3600, actor="test")
            stale = await admin.create_token(a.db, "root", "old script", 3600, actor="test")
            expired = await admin.create_token(a.db, "root", "expired script", 3600, actor="test")
            await admin.create_account(a.db, "other", "technician", actor="test", password="y" * 16,
                                       with_totp=False, must_change=False)
            others = await admin.create_token(a.db, "other", "their script", 3600, actor="test")
            root = await users.get_row(a.db, username="root")
            assert root is not None
            async with a.db.transaction() as tx:
                cookie = await console_sessions.create(tx, root["id"])
                old_cookie = await console_sessions.create(tx, root["id"])
                await tx.execute("UPDATE api_tokens SET expires_at = ? WHERE id = ?",
                                 (time.time() - 1, expired.id))
                await tx.execute("UPDATE console_sessions SET created_at = ? WHERE id = ?",
                                 (time.time() - console_sessions.ABSOLUTE_S - 1, old_cookie.id))
            state = await enroll_agent(c, tmp_path / "agent")
            setup = configure_agent(xvfb.display, ScriptedConsentUI([True]))
            async with running_agent(state, setup=setup) as agent, aiohttp.ClientSession() as http:
                await asyncio.wait_for(agent.client.ready.wait(), 30)
                await wait_until(lambda: c.connections.get(state.device_id) is not None, timeout=30,
                                 what="the channel on C")
                async with http.post(
                        f"https://localhost:{a.console_port}/api/v1/devices/{state.device_id}/sessions",
                        json={"mode": "view"}, ssl=_ctx(a),
                        headers={"Authorization": f"Bearer {good.token}"}) as response:
                    view = await response.json()
                assert response.status == 201 and view["node"] == "node-c", view
                sid = view["session_id"]
                live = c.console_app[SESSIONS].live
                await wait_until(lambda: sid in live, timeout=30, what="the session live on C")

                # Reads are forwarded too, but not audited (the console polls them every second).
                status, body = await _call(http, a, "GET", f"/sessions/{sid}", good.token)
                assert status == 200 and body["node"] == "node-c", body

                # Forwarded as A would, after the login it names ended: refused on C, audited there.
                assert await admin.revoke_token(a.db, stale.id, actor="test")
                await console_sessions.revoke(a.db, cookie.id)
                holder = Holder("node-c", c.console_url)
                ended: list[tuple[dict[str, Any], str]] = [
                    ({"token_id": stale.id}, "token revoked"), ({"token_id": expired.id}, "token expired"),
                    ({"token_id": others.id}, "unknown token"), ({"login_id": cookie.id}, "login ended"),
                    ({"login_id": old_cookie.id}, "login ended"), ({}, "no login named")]
                for login, _ in ended:
                    with pytest.raises(ApiError) as refused:
                        await a.bus.router.call(holder, NodeCall(action="end", session_id=sid, user_id=root["id"],
                                                                 node="node-a", **login))
                    assert (refused.value.status, refused.value.code) == _expected(login), refused.value
                assert sid in live, "a refused call must not end the session"
                assert [(r["target"], r["action"], r.get("token"), r["reason"], r["node"])
                        for r in await _audit(c, "session.call.refused")] == [
                    (sid, "end", login.get("token_id"), reason, "node-a") for login, reason in ended]

                # A session start routed to C under an ended login: refused and audited there, nothing started.
                started = await a.db.fetchone("SELECT COUNT(*) AS n FROM sessions WHERE device_id = ?",
                                              (state.device_id,))
                for login, _ in ended:
                    with pytest.raises(ApiError) as refused:
                        await a.bus.router.request_session(holder, RoutedSession(
                            device_id=state.device_id, user_id=root["id"], mode="view", node="node-a", **login))
                    assert (refused.value.status, refused.value.code) == _expected(login), refused.value
                assert [(r["target"], r.get("token"), r["reason"], r["node"])
                        for r in await _audit(c, "session.start.refused")] == [
                    (state.device_id, login.get("token_id"), reason, "node-a") for login, reason in ended]
                assert await a.db.fetchone("SELECT COUNT(*) AS n FROM sessions WHERE device_id = ?",
                                           (state.device_id,)) == started

                # The real call through A's API, with the live token: C ends the session and names the token.
                status, body = await _call(http, a, "POST", f"/sessions/{sid}/end", good.token)
                assert status == 200 and body["node"] == "node-c", body
                await wait_until(lambda: sid not in live, timeout=30, what="the session ended on C")
                forwarded = await _audit(c, "session.call.forwarded")
                assert [(r["actor"], r["target"], r["action"], r["token"], r["node"])
                        for r in forwarded] == [("user:root", sid, "end", good.id, "node-a")], forwarded
                done = await _audit(c, "session.call.done")
                assert [(r["action"], r["token"], r["status"]) for r in done] == [("end", good.id, 200)], done

                # Revoked on A: A itself refuses the token now (401), nothing reaches C.
                assert await admin.revoke_token(a.db, good.id, actor="test")
                status, _ = await _call(http, a, "POST", f"/sessions/{sid}/end", good.token)
                assert status == 401
                assert len(await _audit(c, "session.call.forwarded")) == 1
