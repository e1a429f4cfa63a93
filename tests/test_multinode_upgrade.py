"""A rolling upgrade: an old and a new node serve side by side on one PostgreSQL and one NATS.

The old node is this repository at an older commit (the parent of the commit that added migration
23), exported with ``git archive`` and run with this interpreter and ``PYTHONPATH`` pointing at it
(``python -P``: the checkout in the working directory is not on its path). The new node (this
checkout) starts first and migrates; the old node then starts on the newer schema (its runner
ignores recorded versions it does not know) and serves. Checked across the two versions:

* an agent on the old node reports its inventory, and the new node's API shows it;
* a session requested on the new node for a device held by the old node is routed to the old node
  (``helpline.node.<node>.session``: a wire contract between versions) and streams from there;
* a revocation issued with either version's ``helpline admin device revoke`` closes the device's
  channel on the other version's node.

Needs a full clone (CI checks out main with its history), HELPLINE_TEST_PG_URL, nats-server and Xvfb.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from agent.consent.scripted import ScriptedConsentUI
from agent.enroll import enroll
from agent.state import AgentState
from agent.viewer import Viewer
from certs import tls
from certs.pki import CertificateAuthority
from server.accounts import admin
from server.enrollment import create_token
from server.store import Database, open_database
from tests.harness import RunningAgent, make_pki, running_agent, wait_until
from tests.nats_server import nats_server, stop
from tests.procs import HELPLINE, free_port, helpline, spawn, wait_for_port
from tests.test_session_helpers import configure_agent
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parent.parent
#: The newest migration the old node must not know: the old node is the commit before it.
NEWER_MIGRATION = "server/store/migrations/m0023_ticket_create_once.py"


def old_commit() -> str:
    """The parent of the commit that added :data:`NEWER_MIGRATION` (fails in a shallow clone)."""
    added = subprocess.run(["git", "log", "--format=%H", "--diff-filter=A", "-1", "--", NEWER_MIGRATION],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    parent = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{added}^"], cwd=REPO,
                            capture_output=True, text=True)
    if not added or parent.returncode != 0:
        raise RuntimeError(f"the rolling-upgrade test needs the git history of {NEWER_MIGRATION} (a full clone)")
    return parent.stdout.strip()


def export_tree(commit: str, target: Path) -> Path:
    """``git archive`` of ``commit`` unpacked into ``target``."""
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def old_command(tree: Path) -> tuple[Sequence[str], dict[str, str]]:
    """How to run the old tree's ``helpline``: ``-P`` keeps the working directory (this checkout) off its path."""
    return (sys.executable, "-P", "-m", "helpline"), {"PYTHONPATH": str(tree)}


@contextlib.contextmanager
def node(tmp_path: Path, name: str, env: dict[str, str],
         command: Sequence[str] = HELPLINE) -> Iterator[tuple[int, int]]:
    """A ``helpline server`` process (this checkout's, or ``command``'s); (agent port, console port)."""
    agent_port, console_port = free_port(), free_port()
    with spawn("server", "--data", str(tmp_path / name), "--host", "127.0.0.1", "--agent-port", str(agent_port),
               "--console-port", str(console_port), log=tmp_path / f"{name}.log",
               env={**env, "HELPLINE_NODE_ID": name}, command=command) as proc:
        try:
            wait_for_port(console_port, proc, timeout=90)
            wait_for_port(agent_port, proc, timeout=90)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}\n{(tmp_path / f'{name}.log').read_text()[-3000:]}") from exc
        try:
            yield agent_port, console_port
        finally:
            stop(proc)


@contextlib.asynccontextmanager
async def fresh_schema(pg_url: str) -> AsyncIterator[str]:
    """A PostgreSQL schema of its own for the test; its URL; dropped afterwards."""
    schema = f"hl_upg_{os.getpid()}_{secrets.token_hex(5)}"
    conn = await asyncpg.connect(pg_url)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    try:
        yield f"{pg_url}{'&' if '?' in pg_url else '?'}search_path={schema}"
    finally:
        conn = await asyncpg.connect(pg_url)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def enrolled(db: Database, pki: Path, console_port: int, state_dir: Path) -> AgentState:
    """A device enrolled through the node at ``console_port`` (its agent URL is that node's)."""
    token = (await create_token(db, group="default", ttl_s=600, uses=1, actor="test")).token
    state = AgentState(state_dir)
    fingerprint = CertificateAuthority.load(pki).fingerprint_sha256
    await asyncio.to_thread(enroll, f"https://localhost:{console_port}", token, fingerprint, state)
    return state


async def get_json(http: aiohttp.ClientSession, url: str, ctx: ssl.SSLContext,
                   headers: dict[str, str]) -> tuple[int, Any]:
    async with http.get(url, ssl=ctx, headers=headers) as response:
        return response.status, await response.json()


async def closed_by_revocation(agent: RunningAgent) -> bool:
    """The agent lost its channel and is not back (a revoked certificate is refused at the handshake)."""
    return not agent.client.ready.is_set()


async def test_an_old_and_a_new_node_serve_side_by_side(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """New node migrates, old node serves on the newer schema; inventory, routed sessions, revocations cross versions."""
    pg_url = os.environ.get("HELPLINE_TEST_PG_URL")
    if not pg_url:
        raise RuntimeError("the multi-node tests need HELPLINE_TEST_PG_URL (nodes share one PostgreSQL)")
    tree = export_tree(old_commit(), tmp_path / "old-tree")
    assert not (tree / NEWER_MIGRATION).exists()
    old_cmd, old_env = old_command(tree)
    pki = make_pki(tmp_path / "pki")
    async with fresh_schema(pg_url) as db_url:
        with nats_server(tmp_path / "nats") as nats:
            env = {"HELPLINE_DATABASE_URL": db_url, "HELPLINE_NATS_URL": nats.url, "HELPLINE_PKI_DIR": str(pki),
                   "HELPLINE_PUBLIC_HOST": "localhost", "HELPLINE_SUPPORT_CODES_NODES": "2"}
            # One deployment's shared keys, made once and copied to every node's data directory.
            helpline("admin", "keys", "init", "--data", str(tmp_path / "new"), env=env)
            (tmp_path / "old").mkdir(mode=0o700)
            for name in os.listdir(tmp_path / "new"):
                shutil.copy2(tmp_path / "new" / name, tmp_path / "old" / name)
            with node(tmp_path, "new", env) as (_new_agent_port, new_console):
                db = await open_database(db_url)
                try:
                    versions = {r["version"] for r in await db.fetchall("SELECT version FROM schema_migrations")}
                    assert 23 in versions  # the new node migrated past what the old node knows
                    await admin.create_account(db, "root", "admin", actor="test", password="x" * 16,
                                               with_totp=False, must_change=False)
                    bearer = (await admin.create_token(db, "root", "test", 3600, actor="test")).token
                    with node(tmp_path, "old", {**env, **old_env}, old_cmd) as (_old_agent_port, old_console):
                        await side_by_side(tmp_path, xvfb, db, pki, env, old_cmd, old_env, bearer,
                                           new_console, old_console)
                finally:
                    await db.close()


async def side_by_side(tmp_path: Path, xvfb: XvfbHandle, db: Database, pki: Path,  # noqa: F811
                       env: dict[str, str], old_cmd: Sequence[str], old_env: dict[str, str], bearer: str,
                       new_console: int, old_console: int) -> None:
    headers = {"Authorization": f"Bearer {bearer}"}
    ctx = tls.agent_client_context(pki / "ca.pem", None, None)
    new_api, old_api = f"https://localhost:{new_console}/api/v1", f"https://localhost:{old_console}/api/v1"
    on_old = await enrolled(db, pki, old_console, tmp_path / "agent-old")
    on_new = await enrolled(db, pki, new_console, tmp_path / "agent-new")
    setup = configure_agent(xvfb.display, ScriptedConsentUI([True]))
    async with running_agent(on_old, setup=setup) as old_agent, running_agent(on_new) as new_agent, \
            aiohttp.ClientSession() as http:
        await asyncio.wait_for(old_agent.client.ready.wait(), 60)
        await asyncio.wait_for(new_agent.client.ready.wait(), 60)

        # Inventory reported to the old node, read through the new node's API.
        seen: list[Any] = []

        async def inventory_on_new() -> bool:
            status, device = await get_json(http, f"{new_api}/devices/{on_old.device_id}", ctx, headers)
            seen[:] = [status, device]
            return (status == 200 and device["status"] == "online" and device["last_inventory"] is not None
                    and bool(device["hostname"]) and bool(device["os"]))
        try:
            await wait_until(inventory_on_new, timeout=60, interval=0.2, what="the old node's device on the new node")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {seen}") from None

        # A session asked of the new node for the old node's device: routed there, streaming from there.
        async with http.post(f"{new_api}/devices/{on_old.device_id}/sessions", json={"mode": "view"}, ssl=ctx,
                             headers=headers) as response:
            body = await response.json()
        assert response.status == 201, body
        assert body["node"] == "old", body
        assert body["node_url"] == f"https://localhost:{old_console}", body
        viewer = Viewer(f"wss://localhost:{old_console}/api/v1/sessions/{body['session_id']}/stream",
                        ssl_context=ctx, headers={**headers, "Origin": f"https://localhost:{old_console}"})
        async with viewer:
            await viewer.wait_for_updates(1, 60)
        status, session = await get_json(http, f"{new_api}/sessions/{body['session_id']}", ctx, headers)
        assert status == 200 and session["device_id"] == on_old.device_id, session

        # Revocations, each issued with the other version's CLI.
        new_cli_env = {**env, "HELPLINE_NODE_ID": "cli-new"}
        helpline("admin", "device", "revoke", on_old.device_id, "--data", str(tmp_path / "cli-new"),
                 env=new_cli_env, timeout=90)
        await wait_until(lambda: closed_by_revocation(old_agent), timeout=30, interval=0.05,
                         what="the old node closing the device revoked by the new code")
        helpline("admin", "device", "revoke", on_new.device_id, "--data", str(tmp_path / "cli-old"),
                 env={**env, **old_env, "HELPLINE_NODE_ID": "cli-old"}, timeout=90, command=old_cmd)
        await wait_until(lambda: closed_by_revocation(new_agent), timeout=30, interval=0.05,
                         what="the new node closing the device revoked by the old code")
        for device_id in (on_old.device_id, on_new.device_id):
            status, device = await get_json(http, f"{old_api}/devices/{device_id}", ctx, headers)
            assert status == 200 and device["status"] == "revoked", device
