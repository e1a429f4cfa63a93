"""An agent that stops reading its control channel is cut off after the stall limit, and while it stalls it
holds back nothing meant for other devices (an authority change — a revocation — still reaches them).

The stalled agent is a real mTLS control channel whose client stops reading: websockets pauses reading
once one frame is queued (``max_queue=1``) and its socket has a 4 KiB receive buffer, so the server's
writes back up and its drain waits, as they would for a device that hung with its connection open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import ClientConnection, connect

from agent.state import AgentState
from certs import tls
from protocol import codec
from protocol.messages import Error, Hello, Welcome
from server import agent_channel
from server.agent_channel import AgentConnection
from server.app import HelplineServer
from server.authority import repository as documents
from server.authority.push import CAPABILITY
from tests.harness import enroll_agent, running_server, wait_until
from tests.tasks_helpers import make_org, task_agent

FILLER = Error(code="filler", message="x" * 1000)


@contextlib.asynccontextmanager
async def stalled_agent(server: HelplineServer, state: AgentState) -> AsyncIterator[AgentConnection]:
    """The device's control channel, open, whose client reads nothing after the welcome; yields the server's
    side of it once the server's writes to it are backed up (a push to it now waits on its send lock)."""
    url = urlsplit(state.agent_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (url.hostname or "127.0.0.1", url.port or 443))
    ctx = tls.agent_client_context(state.ca_path, state.cert_path, state.key_path)
    ws: ClientConnection
    async with connect(state.agent_url, ssl=ctx, sock=sock, max_queue=1, max_size=None, ping_interval=None,
                       compression=None) as ws:
        await ws.send(codec.encode(Hello(min_version=1, max_version=1, agent_version="stalled",
                                         device_id=state.device_id, capabilities=[CAPABILITY])))
        assert isinstance(codec.decode(await asyncio.wait_for(ws.recv(), 10)), Welcome)
        await wait_until(lambda: server.connections.get(state.device_id) is not None, what="the channel registered")
        conn = server.connections.get(state.device_id)
        assert conn is not None and conn.transport is not None
        transport = conn.transport

        async def fill() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    await conn.send(FILLER)

        filler = asyncio.create_task(fill())
        try:
            # Past asyncio's 64 KiB high-water mark the writer is paused: the filler waits in drain, holding
            # the connection's send lock.
            await wait_until(lambda: transport.get_write_buffer_size() > 64 * 1024, timeout=30,
                             what="the server's writes to the stalled agent backed up")
            assert not filler.done()
            yield conn
        finally:
            ws.transport.abort()
            filler.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await filler


async def test_an_agent_that_stops_reading_is_cut_off_after_the_stall_limit(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_channel, "SEND_STALL_S", 1.0)
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "stalled", group="lab")
        async with stalled_agent(server, state) as conn:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ConnectionResetError):
                await conn.send(FILLER)  # waits behind the filler's send lock, then for its own frame
            assert conn.transport is not None and conn.transport.is_closing()
            await wait_until(lambda: server.connections.get(state.device_id) is None, timeout=10,
                             what="the stalled channel removed from the registry")
            assert loop.time() - started < 10


async def test_a_stalled_agent_does_not_hold_a_revocation_back_from_the_others(tmp_path: Path) -> None:
    """The stalled device connected first (it is first in the push order) and keeps the default stall limit
    (30 s): the healthy agent still gets the new revocation list within seconds."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        stalled_state = await enroll_agent(server, tmp_path / "stalled", group="lab")
        healthy_state = await enroll_agent(server, tmp_path / "healthy", group="lab")
        async with stalled_agent(server, stalled_state) as stalled:
            async with task_agent(server, healthy_state, org) as healthy:
                assert server.connections.device_ids()[0] == stalled_state.device_id
                store = healthy.parts.authority.store
                before = store.revocation_sequence
                async with server.db.transaction() as tx:
                    await documents.put_revocations(tx, org.revocations(documents=("doc-x",)), actor="user:test")
                await wait_until(lambda: store.revocation_sequence > before, timeout=10,
                                 what="the healthy agent took the new revocation list")
                assert server.connections.get(stalled_state.device_id) is stalled  # still waiting, not yet cut


async def test_a_device_reconnecting_past_its_stalled_connection_is_served_at_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The device's old connection is stalled mid-push (default 30 s limit); the device connects again: the old
    one is closed within CLOSE_WAIT_S (then aborted), and the new one gets its welcome and its authority
    without waiting for the old connection's writes or locks. A push that met a channel closed or still in its
    handshake on the way is a warning, never an error with a traceback."""
    caplog.set_level(logging.WARNING, logger="server.authority")
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        async with stalled_agent(server, state) as old:
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with task_agent(server, state, org) as agent:  # waits until it holds the org's authority
                took = loop.time() - started
                assert server.connections.get(state.device_id) is not old
                assert agent.parts.authority.store.unattended_problem(time.time()) == ""
                assert took < agent_channel.SEND_STALL_S / 2, took
            assert old.transport is not None and old.transport.is_closing()
        assert not [r for r in caplog.records if r.name.startswith("server.authority") and r.levelno >= logging.ERROR]
