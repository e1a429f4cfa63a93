"""A task run that reaches a freshly connected agent before the connection's first authority.update.

Real server, real agent, real TLS. The race is made deterministic by holding the server's authority push
back (its ``snapshot.read`` waits on an event) while the scheduler delivers a due run to the new connection:
the agent, which holds no root yet, must wait for the update and then run what two approvers signed —
and, when a server withholds the update, refuse with a reason that says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.authority import audit_path
from agent.authority.audit import DeviceAudit
from agent.runtime import Agent
from server.authority import push, snapshot
from server.tasks.feature import SCHEDULER
from server.tasks.status import FINAL
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.tasks_helpers import authorize, make_org, pinned, publish_authority, run_of, submit

HARMLESS = {"targets": ["tmp"], "dry_run": True}


@asynccontextmanager
async def held_back_push(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[asyncio.Event]:
    """The server builds no authority update until the event is set (set on the way out, so nothing hangs)."""
    release = asyncio.Event()
    real = snapshot.read  # what every update is built from (the connect's, a change's, an offer's)

    async def late(*args: Any, **kwargs: Any) -> Any:
        await release.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(snapshot, "read", late)
    try:
        yield release
    finally:
        release.set()


async def _run_status(server: Any, task_id: str, wanted: Callable[[str], bool]) -> bool:
    return wanted((await run_of(server, task_id))["status"])


async def test_a_run_that_overtakes_the_first_update_waits_for_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Delivered while the agent holds no root, the run is not refused: it waits, and runs once the update came."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        await publish_authority(server.db, org)
        async with held_back_push(monkeypatch) as release, running_agent(state, pinned(state, org)) as agent:
            await wait_until(lambda: server.connections.get(state.device_id) is not None, what="the connection")
            document = authorize(org, devices=[state.device_id], action="clear_temp", params=HARMLESS)
            task = await submit(server, document, device=state.device_id)
            await wait_until(lambda: _run_status(server, task["id"], lambda s: s == "sent"), timeout=15,
                             what="the run delivered")
            store = agent.parts.authority.store
            assert store.unattended_problem(time.time()) != ""  # the run arrived before any authority
            release.set()
            await wait_until(lambda: _run_status(server, task["id"], lambda s: s in FINAL), timeout=30,
                             what="the run's result")
            run = await run_of(server, task["id"])
            assert run["status"] == "succeeded", run
            events = [e["event"] for e in DeviceAudit(audit_path(state)).entries() if e["event"].startswith("task.")]
            assert events == ["task.accepted"]


def _short_hold(agent: Agent) -> None:
    agent.authority.store.first_update.hold_s = 1.0


async def test_a_run_whose_update_never_comes_is_refused_saying_why(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """No authority update within the hold time: the run is refused with that reason, on both sides."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        await publish_authority(server.db, org)
        async def withheld(*_args: Any) -> None:
            """A server that never pushes the authority (its connection is otherwise served)."""

        monkeypatch.setattr(push, "send_update", withheld)  # the one way out: on connect and after changes
        async with running_agent(state, pinned(state, org), setup=_short_hold):
            await wait_until(lambda: server.connections.get(state.device_id) is not None, what="the connection")
            document = authorize(org, devices=[state.device_id], action="clear_temp", params=HARMLESS)
            task = await submit(server, document, device=state.device_id)
            await wait_until(lambda: _run_status(server, task["id"], lambda s: s in FINAL), timeout=30,
                             what="the refusal")
            run = await run_of(server, task["id"])
            assert run["status"] == "refused", run
            assert run["reason"].startswith("the server sent no authority update within 1 s of connecting")
            refused = [e for e in DeviceAudit(audit_path(state)).entries() if e["event"] == "task.refused"]
            assert len(refused) == 1 and refused[0]["run_id"] == run["id"] and refused[0]["reason"] == run["reason"]
