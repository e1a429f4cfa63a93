"""A call on a session live on node C, made on node A with an API token: C re-checks the token and names it.

Two real nodes on one PostgreSQL and a real nats-server (tests/test_multinode_bus.py), a real agent on Xvfb
held by C. The call made through A's API is forwarded with the token's id; C audits it naming the token. A
token revoked after A checked it (the window the re-check closes) is simulated by forwarding, on A's own bus
connection, a call under a revoked token: C refuses it and audits the refusal. Needs HELPLINE_TEST_PG_URL,
nats-server and Xvfb; fails without them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.consent.scripted import ScriptedConsentUI
from server.accounts import admin, users
from server.accounts import sessions as console_sessions
from server.app import HelplineServer
from server.bus.routing import Holder, NodeCall
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


async def test_forwarded_token_call_is_rechecked_and_audited_on_the_holder(tmp_path: Path,
                                                                           xvfb: XvfbHandle) -> None:  # noqa: F811
    """End through A with a token: C names the token in its audit; a revoked token, a revoked cookie login or a
    call naming no login, forwarded to C, is refused there (403 login_ended) and audited; the session goes on."""
    with nats_server(tmp_path / "nats") as nats:
        async with two_nodes(tmp_path, nats) as (a, c):
            assert a.bus is not None and c.bus is not None
            await admin.create_account(a.db, "root", "admin", actor="test", password="x" * 16, with_totp=False,
                                       must_change=False)
            good = await admin.create_token(a.db, "root", "script", 3600, actor="test")
            stale = await admin.create_token(a.db, "root", "old script", 3600, actor="test")
            root = await users.get_row(a.db, username="root")
            assert root is not None
            async with a.db.transaction() as tx:
                cookie = await console_sessions.create(tx, root["id"])
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
                refusals = [NodeCall(action="end", session_id=sid, user_id=root["id"], token_id=stale.id,
                                     node="node-a"),
                            NodeCall(action="end", session_id=sid, user_id=root["id"], login_id=cookie.id,
                                     node="node-a"),
                            NodeCall(action="end", session_id=sid, user_id=root["id"], node="node-a")]
                for call in refusals:
                    with pytest.raises(ApiError) as refused:
                        await a.bus.router.call(holder, call)
                    assert (refused.value.status, refused.value.code) == (403, "login_ended"), refused.value
                assert sid in live, "a refused call must not end the session"
                assert [(r["target"], r["action"], r.get("token"), r["reason"], r["node"])
                        for r in await _audit(c, "session.call.refused")] == [
                    (sid, "end", stale.id, "token revoked", "node-a"),
                    (sid, "end", None, "login ended", "node-a"),
                    (sid, "end", None, "no login named", "node-a")]

                # The real call through A's API, with the live token: C ends the session and names the token.
                status, body = await _call(http, a, "POST", f"/sessions/{sid}/end", good.token)
                assert status == 200 and body["node"] == "node-c", body
                await wait_until(lambda: sid not in live, timeout=30, what="the session ended on C")
                forwarded = await _audit(c, "session.call.forwarded")
                assert [(r["actor"], r["target"], r["action"], r["token"], r["node"], r["status"])
                        for r in forwarded] == [("user:root", sid, "end", good.id, "node-a", 200)], forwarded

                # Revoked on A: A itself refuses the token now (401), nothing reaches C.
                assert await admin.revoke_token(a.db, good.id, actor="test")
                status, _ = await _call(http, a, "POST", f"/sessions/{sid}/end", good.token)
                assert status == 401
                assert len(await _audit(c, "session.call.forwarded")) == 1
