"""Nodes on one PostgreSQL and one real nats-server: revocation fan-out and a session routed across nodes.

Two :class:`HelplineServer` nodes in the test's loop share the org PKI, one PostgreSQL schema and
nats-server; a real agent holds its control channel on node C. Needs HELPLINE_TEST_PG_URL (SQLite
cannot be shared between nodes) and nats-server (scripts/setup.sh); fails, not skips, without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from agent.consent.scripted import ScriptedConsentUI
from agent.viewer import Viewer
from certs import tls
from server import devices
from server.accounts import admin
from server.app import HelplineServer
from tests import pg_store
from tests.harness import enroll_agent, make_pki, running_agent, running_server, wait_until
from tests.nats_server import NatsServer, nats_server
from tests.procs import helpline
from tests.test_session_helpers import configure_agent
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


def _pg_url() -> str:
    if not os.environ.get("HELPLINE_TEST_PG_URL"):
        raise RuntimeError("the multi-node tests need HELPLINE_TEST_PG_URL (nodes share one PostgreSQL)")
    return ""


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, nats: NatsServer) -> AsyncIterator[tuple[HelplineServer, HelplineServer]]:
    """Nodes A and C: shared PKI and PostgreSQL schema, each its own data dir, both on the bus."""
    _pg_url()
    pki = make_pki(tmp_path / "pki")
    db_url = pg_store.url_for(tmp_path / "shared")
    common: dict[str, Any] = {"pki_dir": pki, "database_url": db_url, "nats_url": nats.url}
    async with running_server(tmp_path / "a", node_id="node-a", **common) as a, \
            running_server(tmp_path / "c", node_id="node-c", **common) as c:
        yield a, c


async def _bearer(node: HelplineServer) -> str:
    await admin.create_account(node.db, "root", "admin", actor="test", password="x" * 16, with_totp=False,
                               must_change=False)
    return (await admin.create_token(node.db, "root", "test", 3600, actor="test")).token


def _ctx(node: HelplineServer) -> ssl.SSLContext:
    return tls.agent_client_context(node.pki.ca_pem, None, None)


async def test_revocation_on_one_node_closes_the_channel_on_another(tmp_path: Path) -> None:
    """A device revoked through node A loses its control channel on node C in well under a second."""
    with nats_server(tmp_path / "nats") as nats:
        async with two_nodes(tmp_path, nats) as (a, c):
            assert a.bus is not None and c.bus is not None
            state = await enroll_agent(c, tmp_path / "agent")
            async with running_agent(state) as agent:
                await asyncio.wait_for(agent.client.ready.wait(), 20)
                await wait_until(lambda: c.connections.get(state.device_id) is not None, timeout=20,
                                 what="the channel on C")
                assert c.watcher is not None
                c.watcher.slow_down(60.0)  # only the bus's ring can deliver the event in time now
                holder = await a.bus.holder(state.device_id)
                assert holder is not None and holder.node == "node-c"  # presence: A knows who holds it
                started = time.monotonic()
                assert await devices.revoke(a.db, state.device_id, actor="test")
                await wait_until(lambda: c.connections.get(state.device_id) is None, timeout=5, interval=0.002,
                                 what="C closing the revoked device's channel")
                took = time.monotonic() - started
                print(f"revocation fan-out A -> C: {took * 1000:.1f} ms")
                assert took < 1.0, f"fan-out took {took * 1000:.0f} ms"
                assert await a.bus.holder(state.device_id) is None


async def test_session_requested_on_one_node_streams_from_the_devices_node(tmp_path: Path,
                                                                           xvfb: XvfbHandle) -> None:  # noqa: F811
    """A session asked of node A for a device on node C is started on C, named by node_url, and streams."""
    with nats_server(tmp_path / "nats") as nats:
        async with two_nodes(tmp_path, nats) as (a, c):
            token = await _bearer(a)
            headers = {"Authorization": f"Bearer {token}"}
            state = await enroll_agent(c, tmp_path / "agent")
            setup = configure_agent(xvfb.display, ScriptedConsentUI([True]))
            async with running_agent(state, setup=setup) as agent:
                await asyncio.wait_for(agent.client.ready.wait(), 20)
                await wait_until(lambda: c.connections.get(state.device_id) is not None, timeout=20,
                                 what="the channel on C")
                async with aiohttp.ClientSession() as http, http.post(
                        f"https://localhost:{a.console_port}/api/v1/devices/{state.device_id}/sessions",
                        json={"mode": "view"}, ssl=_ctx(a), headers=headers) as response:
                    body = await response.json()
                assert response.status == 201, body
                assert body["node"] == "node-c" and body["node_url"] == c.console_url
                sid = body["session_id"]
                from server.sessions import SESSIONS
                assert sid in c.console_app[SESSIONS].live and sid not in a.console_app[SESSIONS].live
                viewer = Viewer(f"wss://localhost:{c.console_port}/api/v1/sessions/{sid}/stream",
                                ssl_context=_ctx(c), headers={**headers, "Origin": c.console_url})
                async with viewer:
                    await viewer.wait_for_updates(1, 30)
            # The holder gone: A says so plainly.
            async with aiohttp.ClientSession() as http, http.post(
                    f"https://localhost:{a.console_port}/api/v1/devices/{state.device_id}/sessions",
                    json={"mode": "view"}, ssl=_ctx(a), headers=headers) as response:
                body = await response.json()
            assert response.status == 409 and body["error"]["code"] == "device_offline", body


async def test_admin_cli_revocation_rings_the_nodes(tmp_path: Path) -> None:
    """``helpline admin device revoke`` (its own process, on the bus) closes the channel on C at once."""
    with nats_server(tmp_path / "nats") as nats:
        async with two_nodes(tmp_path, nats) as (_a, c):
            assert c.watcher is not None
            c.watcher.slow_down(60.0)  # only a ring can deliver the event within the deadline
            state = await enroll_agent(c, tmp_path / "agent")
            async with running_agent(state) as agent:
                await asyncio.wait_for(agent.client.ready.wait(), 20)
                env = {"HELPLINE_DATABASE_URL": c.config.database_url, "HELPLINE_NATS_URL": nats.url}
                result = await asyncio.to_thread(helpline, "admin", "device", "revoke", state.device_id,
                                                 "--data", str(tmp_path / "cli"), env=env)
                assert result.returncode == 0
                await wait_until(lambda: c.connections.get(state.device_id) is None, timeout=10,
                                 what="C closing the channel after the CLI's revocation")
