"""Stream tickets refused for every reason but replay and origin (those: tests/test_multinode_console.py).

One real server (SQLite, real TLS); tickets are minted with :func:`server.sessions.tickets.mint` as node A
would, and presented on the stream's websocket upgrade as a viewer would. Each refusal is a 403 before any
stream code runs, and is audited with its reason.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp

from certs import tls
from server.accounts import admin, users
from server.accounts import sessions as console_sessions
from server.app import HelplineServer
from server.bus.connection import node_name
from server.sessions import tickets
from tests.harness import console_url, running_server


async def _upgrade(server: HelplineServer, url: str, origin: str) -> int:
    """The upgrade's status: 101, or the refusal's."""
    ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, ssl=ctx, headers={"Origin": origin}) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def _reasons(server: HelplineServer) -> list[str]:
    rows = await server.db.fetchall("SELECT details FROM audit_log WHERE action = ? ORDER BY seq",
                                    ("session.stream_ticket.refused",))
    return [json.loads(r["details"])["reason"] for r in rows]


async def test_expired_foreign_node_ended_login_and_oversized_tickets_are_refused(tmp_path: Path) -> None:
    """Past its 30 s, minted for another node, its login revoked, or too long: 403 each, reason audited."""
    async with running_server(tmp_path / "srv") as server:
        created = await admin.create_account(server.db, "tess", "technician", actor="test")
        row = await users.get_row(server.db, user_id=created.user.id)
        assert row is not None
        async with server.db.transaction() as tx:
            login = await console_sessions.create(tx, created.user.id)
        caller = await users.principal_for(server.db, row, login.id)
        me, origin = node_name(server.config), console_url(server)

        async def minted(*, node: str = me, now: float | None = None) -> str:
            done = await tickets.mint(server.db, session_id="s-1", caller=caller, node=node, origin=origin, now=now)
            return tickets.stream_url(origin, "s-1", done.ticket)

        assert await _upgrade(server, await minted(now=time.time() - tickets.TICKET_TTL_S - 1), origin) == 403
        assert await _upgrade(server, await minted(node="node-elsewhere"), origin) == 403
        for_revoked = await minted()
        await console_sessions.revoke(server.db, login.id)
        assert await _upgrade(server, for_revoked, origin) == 403
        too_long = tickets.stream_url(origin, "s-1", "x" * (tickets.MAX_TICKET + 1))
        assert await _upgrade(server, too_long, origin) == 403
        assert await _reasons(server) == ["expired", "another session or node", "login ended", "not a stream upgrade"]
        minted_rows = await server.db.fetchall("SELECT * FROM audit_log WHERE action = 'session.stream_ticket'")
        assert len(minted_rows) == 3


async def test_a_ticket_elsewhere_than_a_stream_means_nothing(tmp_path: Path) -> None:
    """``?ticket=`` on another route is not an authentication: the caller is still unauthenticated (401)."""
    async with running_server(tmp_path / "srv") as server:
        ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
        async with aiohttp.ClientSession() as http, http.get(f"{console_url(server)}/api/v1/auth/me?ticket=abc",
                                                             ssl=ctx) as response:
            assert response.status == 401
        assert await _reasons(server) == []
