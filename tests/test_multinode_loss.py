"""Losing a node: its agents reconnect to another node, the other node's session carries on.

Real processes: nats-server, two ``helpline server`` nodes (A, C) on one PostgreSQL schema. A real
agent in the test holds a streaming session on A; simulated agents (benchmarks/multinode.py: mTLS,
hello, keepalive, the agent's backoff, a random node per reconnect as a load balancer does) start on
C. C is killed by PID: every simulated agent is back, on A, within the deadline, and the viewer on
A keeps receiving the screen. Every process is stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import asyncpg

from agent.consent.scripted import ScriptedConsentUI
from agent.enroll import enroll
from agent.state import AgentState
from agent.viewer import Viewer
from benchmarks import fleet_certs
from benchmarks.multinode_sim import CAUSES, IDLE, Agent, Sim, agent_life
from certs import tls
from certs.pki import CertificateAuthority
from server.accounts import admin
from server.enrollment import create_token
from server.store import open_database
from tests.deployment_keys import env_for
from tests.harness import make_pki, running_agent, wait_until
from tests.nats_server import nats_server, stop
from tests.procs import free_port, spawn, wait_for_port
from tests.test_session_helpers import configure_agent, paint_root
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

SIMULATED = 24


@contextlib.contextmanager
def node(tmp_path: Path, name: str, db_url: str, nats_url: str) -> Iterator[tuple[int, int, int]]:
    """A ``helpline server`` process; (agent port, console port, pid)."""
    agent_port, console_port = free_port(), free_port()
    env = {"HELPLINE_DATABASE_URL": db_url, "HELPLINE_NATS_URL": nats_url, "HELPLINE_NODE_ID": name,
           "HELPLINE_PKI_DIR": str(tmp_path / "pki"), "HELPLINE_PUBLIC_HOST": "localhost",
           **env_for(tmp_path / name, db_url)}  # the deployment's shared keys in this node's data directory
    with spawn("server", "--data", str(tmp_path / name), "--host", "127.0.0.1", "--agent-port", str(agent_port),
               "--console-port", str(console_port), log=tmp_path / f"{name}.log", env=env) as proc:
        wait_for_port(console_port, proc, timeout=60)
        wait_for_port(agent_port, proc, timeout=60)
        try:
            yield agent_port, console_port, proc.pid
        finally:
            stop(proc)


async def test_a_killed_nodes_agents_reconnect_elsewhere_and_other_sessions_go_on(
        tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    pg_url = os.environ.get("HELPLINE_TEST_PG_URL")
    if not pg_url:
        raise RuntimeError("the multi-node tests need HELPLINE_TEST_PG_URL (nodes share one PostgreSQL)")
    schema = f"hl_e2e_{os.getpid()}_{secrets.token_hex(5)}"
    conn = await asyncpg.connect(pg_url)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    db_url = f"{pg_url}{'&' if '?' in pg_url else '?'}search_path={schema}"
    pki = make_pki(tmp_path / "pki")
    db = await open_database(db_url)
    tasks: list[asyncio.Task[None]] = []
    try:
        (tmp_path / "sim").mkdir()
        issued = await asyncio.to_thread(fleet_certs.issue, pki, tmp_path / "sim",
                                         [f"sim-{i:03d}" for i in range(SIMULATED)], 1)
        await fleet_certs.enroll(db, issued)
        sims = [Sim(i.device_id, i.cert, i.key, "", False) for i in issued]
        await admin.create_account(db, "root", "admin", actor="test", password="x" * 16, with_totp=False,
                                   must_change=False)
        bearer = (await admin.create_token(db, "root", "test", 3600, actor="test")).token
        headers = {"Authorization": f"Bearer {bearer}"}
        ctx: ssl.SSLContext = tls.agent_client_context(pki / "ca.pem", None, None)
        with nats_server(tmp_path / "nats") as nats, \
                node(tmp_path, "node-a", db_url, nats.url) as (a_agent, a_console, _a_pid), \
                node(tmp_path, "node-c", db_url, nats.url) as (c_agent, _c_console, c_pid):
            # The real agent, enrolled through A, holds a session on A.
            token = (await create_token(db, group="default", ttl_s=600, uses=1, actor="test")).token
            state = AgentState(tmp_path / "agent")
            fingerprint = CertificateAuthority.load(pki).fingerprint_sha256
            await asyncio.to_thread(enroll, f"https://localhost:{a_console}", token, fingerprint, state)
            setup = configure_agent(xvfb.display, ScriptedConsentUI([True]))
            async with running_agent(state, setup=setup) as agent:
                await asyncio.wait_for(agent.client.ready.wait(), 30)
                async with aiohttp.ClientSession() as http, http.post(
                        f"https://localhost:{a_console}/api/v1/devices/{state.device_id}/sessions",
                        json={"mode": "view"}, ssl=ctx, headers=headers) as response:
                    body = await response.json()
                assert response.status == 201, body
                viewer = Viewer(f"wss://localhost:{a_console}/api/v1/sessions/{body['session_id']}/stream",
                                ssl_context=ctx, headers={**headers, "Origin": f"https://localhost:{a_console}"})
                async with viewer:
                    await viewer.wait_for_updates(1, 30)
                    # The simulated fleet, all on C first.
                    urls = [f"wss://localhost:{a_agent}/agent", f"wss://localhost:{c_agent}/agent"]
                    counts = [0, 0]
                    gate = asyncio.Semaphore(8)
                    # The simulator's shared values, as plain objects in this one process.
                    phase, killed = SimpleNamespace(value=IDLE), SimpleNamespace(value=0)
                    causes, back = [0] * len(CAUSES), [0]
                    tasks = [asyncio.create_task(agent_life(Agent(s, str(pki / "ca.pem")), urls, 1, counts, 0, causes, 0,
                                                            20.0, 60.0, phase, killed, back, 0, gate))
                             for s in sims]
                    await wait_until(lambda: counts[1] == SIMULATED, timeout=60, what="the fleet on C")
                    os.kill(c_pid, signal.SIGKILL)
                    await wait_until(lambda: counts == [SIMULATED, 0], timeout=90, interval=0.1,
                                     what="every agent of the killed node back on A")
                    # A's session went on: still live, the viewer still open and receiving.
                    assert not viewer.closed.is_set()
                    async with aiohttp.ClientSession() as http, http.get(
                            f"https://localhost:{a_console}/api/v1/sessions/{body['session_id']}",
                            ssl=ctx, headers=headers) as response:
                        session = await response.json()
                    assert session["state"] == "streaming", session
                    paint_root(xvfb.display, "#2a7f3c")  # a change on the device reaches A's viewer
                    await viewer.wait_for_updates(1, 30)
                    assert not viewer.closed.is_set()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await db.close()
        conn = await asyncpg.connect(pg_url)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
