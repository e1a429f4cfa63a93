"""Shared helpers for end-to-end tests: a real server on loopback, real enrolled agents.

Everything here is real: the org PKI, TLS 1.3 with client certificates, SQLite (or, with
``HELPLINE_TEST_STORE=postgresql``, a PostgreSQL schema per data dir at HELPLINE_TEST_PG_URL: see
tests/pg_store.py), websockets. Servers run in the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.enroll import enroll
from agent.runtime import Agent, build_agent
from agent.state import AgentState
from certs.pki import CertificateAuthority, init_pki
from server.app import HelplineServer
from server.config import ServerConfig
from server.enrollment import create_token
from tests import pg_store
from tests.deployment_keys import multinode_ready
from tests.procs import free_port


def make_pki(directory: Path) -> Path:
    if not (directory / "ca.pem").exists():
        init_pki(directory, ["localhost", "127.0.0.1"])
    return directory


def server_config(data_dir: Path, **overrides: Any) -> ServerConfig:
    make_pki(data_dir / "pki")
    # Ports below the ephemeral range, so a restart can bind the same port again safely.
    config = ServerConfig(data_dir=data_dir, host="127.0.0.1", agent_port=free_port(), console_port=free_port(),
                          public_host="localhost", keepalive_s=5.0)
    config = replace(config, **overrides)
    if pg_store.enabled() and "database_url" not in overrides:
        config = replace(config, database_url=pg_store.url_for(data_dir))
    return config


@contextlib.asynccontextmanager
async def running_server(data_dir: Path, **overrides: Any) -> AsyncIterator[HelplineServer]:
    server = HelplineServer(multinode_ready(server_config(data_dir, **overrides)))  # on a bus: shared keys
    await pg_store.ensure_schema(server.config.database_url)
    await server.start()
    try:
        with pg_store.cli_env(server.config.database_url):
            yield server
    finally:
        await server.stop()


def console_url(server: HelplineServer) -> str:
    return f"https://localhost:{server.console_port}"


async def new_token(server: HelplineServer, group: str = "default", *, ttl_s: float = 600, uses: int = 1) -> str:
    created = await create_token(server.db, group=group, ttl_s=ttl_s, uses=uses, actor="test")
    return created.token


async def enroll_agent(server: HelplineServer, state_dir: Path, group: str = "default") -> AgentState:
    """Enroll a new device through the real HTTPS endpoint (in a thread: enroll() blocks)."""
    token = await new_token(server, group)
    state = AgentState(state_dir)
    fingerprint = CertificateAuthority.load(server.config.pki_path).fingerprint_sha256
    await asyncio.to_thread(enroll, console_url(server), token, fingerprint, state)
    return state


class RunningAgent:
    """An agent running in the test's loop; its composed parts (client, sessions, reporter, tasks) at hand."""

    def __init__(self, parts: Agent, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        self.parts, self.task, self.stop_event = parts, task, stop
        self.client, self.sessions, self.reporter, self.tasks = parts.client, parts.sessions, parts.reporter, parts.tasks

    async def stop(self) -> None:
        self.stop_event.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, 10)


@contextlib.asynccontextmanager
async def running_agent(state: AgentState, config: AgentConfig | None = None,
                        setup: Callable[[Agent], None] | None = None) -> AsyncIterator[RunningAgent]:
    """An in-process agent (built by :func:`agent.runtime.build_agent`) running until the block exits.

    ``setup`` gets the composed parts before the agent starts, to swap a seam (UI, clock, runner…).
    """
    config = config or AgentConfig(state_dir=state.directory, backoff_cap_s=1.0)
    parts = build_agent(state, config)
    if setup is not None:
        setup(parts)
    stop = asyncio.Event()
    task = asyncio.create_task(parts.client.run(stop))
    running = RunningAgent(parts, task, stop)
    try:
        yield running
    finally:
        await running.stop()


async def wait_until(predicate: Callable[[], Awaitable[bool] | bool], *, timeout: float = 10.0,
                     interval: float = 0.02, what: str = "condition") -> None:
    """Poll ``predicate`` until true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
