"""Tasks end to end over real mTLS: signed scripts, refusals, windows, timeouts, results."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from agent.runtime import Agent
from protocol.grants import Window
from server import audit
from server.errors import ApiError
from server.tasks import service
from server.tasks.feature import SCHEDULER
from server.tasks.status import FINAL
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.tasks_helpers import grant_for, run_of, sign_script, submit


async def _status(server, task_id: str) -> str:
    return (await run_of(server, task_id))["status"]


async def _audit_actions(server) -> list[str]:
    return [r["action"] for r in await server.db.fetchall("SELECT action FROM audit_log ORDER BY seq")]


@pytest.fixture
def pids_to_reap():
    """PIDs a test learns about (task children); killed at teardown if still alive."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


#: Used where a broken check would otherwise run something: a dry run that touches nothing.
HARMLESS = {"targets": ["tmp"], "dry_run": True}


def _fast(agent: Agent) -> None:
    agent.tasks.poll_s = 0.05


async def test_signed_script_runs_and_output_and_exit_code_arrive(tmp_path: Path) -> None:
    """A script signed with the org grant key runs on the agent; stdout, stderr and exit code reach the server."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        async with running_agent(state, setup=_fast):
            script = 'echo "hello $1"\necho oops >&2\nexit 3\n'
            params = {"interpreter": "sh", "args": ["world"]}
            grant = grant_for(server, devices=[state.device_id])
            task = await submit(server, grant, device=state.device_id, params=params, script=script,
                                signature=sign_script(server, script, params))
            await wait_until(lambda: _final(server, task["id"]), timeout=15, what="result stored")
            run = await run_of(server, task["id"])
            assert run["status"] == "failed" and run["exit_code"] == 3
            assert run["stdout"] == "hello world\n" and run["stderr"] == "oops\n"
            assert run["started_at"] <= run["ended_at"]
            assert "task.result" in await _audit_actions(server)
            assert (await audit.verify_chain(server.db)).ok


async def _final(server, task_id: str) -> bool:
    return (await _status(server, task_id)) in FINAL


async def test_tampered_and_unsigned_scripts_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    """A script whose content or params changed after signing, and an unsigned one, are refused and audited."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        touched = tmp_path / "ran"
        async with running_agent(state, setup=_fast):
            grant = grant_for(server, devices=[state.device_id])
            good = f"touch {touched}\n"
            params = {"interpreter": "sh", "args": []}
            signature = sign_script(server, good, params)
            tampered = await submit(server, grant, device=state.device_id, params=params,
                                    script=good + "rm -rf /important\n", signature=signature)
            swapped = await submit(server, grant, device=state.device_id, params={"interpreter": "bash", "args": []},
                                   script=good, signature=signature)
            unsigned = await submit(server, grant, device=state.device_id, params=params, script=good)
            for task in (tampered, swapped, unsigned):
                await wait_until(lambda t=task: _final(server, t["id"]), timeout=15, what="refusal stored")
            for task in (tampered, swapped):
                run = await run_of(server, task["id"])
                assert run["status"] == "refused" and "signature does not verify" in run["reason"]
            run = await run_of(server, unsigned["id"])
            assert run["status"] == "refused" and "not signed" in run["reason"]
            assert not touched.exists()
            assert (await _audit_actions(server)).count("task.refused") == 3


async def test_bad_requests_and_bad_grants_are_refused_with_reasons(tmp_path: Path) -> None:
    """Unknown action, bad params, an expired grant and a grant without 'tasks' are refused with clear reasons."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        async with running_agent(state, setup=_fast):
            ok = grant_for(server, devices=[state.device_id])
            expired = grant_for(server, devices=[state.device_id], not_before=0, not_after=1000)
            view_only = grant_for(server, devices=[state.device_id], actions=["view"])
            cases = [
                (await submit(server, ok, device=state.device_id, action="restart_service",
                              params={"name": "-bad;rm"}), "bad parameters"),
                (await submit(server, expired, device=state.device_id, action="clear_temp",
                              params=HARMLESS), "expired"),
                (await submit(server, view_only, device=state.device_id, action="clear_temp",
                              params=HARMLESS), "does not allow 'tasks'"),
            ]
            for task, expected in cases:
                await wait_until(lambda t=task: _final(server, t["id"]), timeout=15, what="refusal")
                run = await run_of(server, task["id"])
                assert run["status"] == "refused", run
                assert expected in run["reason"], run["reason"]
            with pytest.raises(ApiError) as unknown:
                await submit(server, ok, device=state.device_id, action="format_disk")
            assert unknown.value.code == "unknown_action"


async def test_task_outside_window_waits_then_runs_when_window_opens(tmp_path: Path) -> None:
    """A task that arrives outside the grant's window waits (reported as waiting) and runs once it opens."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        local = {"now": datetime(2026, 1, 5, 1, 0, tzinfo=UTC)}  # a Monday, 01:00 device time

        def setup(agent: Agent) -> None:
            _fast(agent)
            agent.tasks.local = lambda: local["now"]

        touched = tmp_path / "ran"
        async with running_agent(state, setup=setup):
            grant = grant_for(server, devices=[state.device_id],
                              windows=[Window(days=[0, 1, 2, 3, 4, 5, 6], start="02:00", end="04:00")])
            script, params = f"touch {touched}\n", {"interpreter": "sh", "args": []}
            task = await submit(server, grant, device=state.device_id, params=params, script=script,
                                signature=sign_script(server, script, params))
            await wait_until(lambda: _is(server, task["id"], "waiting"), timeout=15, what="task waiting")
            assert "window" in (await run_of(server, task["id"]))["reason"]
            await asyncio.sleep(0.3)  # several poll intervals pass with the window still closed
            assert not touched.exists()
            local["now"] = datetime(2026, 1, 5, 2, 30, tzinfo=UTC)
            await wait_until(lambda: _is(server, task["id"], "succeeded"), timeout=15, what="task ran")
            assert touched.exists()


async def _is(server, task_id: str, status: str) -> bool:
    return (await _status(server, task_id)) == status


async def test_waiting_task_is_refused_when_grant_expires_before_window(tmp_path: Path) -> None:
    """A waiting task whose grant expires before the window opens is refused and never runs."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        clock = {"now": __import__("time").time()}

        def setup(agent: Agent) -> None:
            _fast(agent)
            agent.tasks.local = lambda: datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
            agent.tasks.clock = lambda: clock["now"]

        touched = tmp_path / "ran"
        async with running_agent(state, setup=setup):
            grant = grant_for(server, devices=[state.device_id], not_after=clock["now"] + 600,
                              windows=[Window(days=[0], start="02:00", end="04:00")])
            script, params = f"touch {touched}\n", {"interpreter": "sh", "args": []}
            task = await submit(server, grant, device=state.device_id, params=params, script=script,
                                signature=sign_script(server, script, params))
            await wait_until(lambda: _is(server, task["id"], "waiting"), timeout=15, what="task waiting")
            clock["now"] += 601
            await wait_until(lambda: _is(server, task["id"], "refused"), timeout=15, what="refused at expiry")
            run = await run_of(server, task["id"])
            assert "expired" in run["reason"] and "waiting" in run["reason"]
            assert not touched.exists()


async def test_hanging_script_is_killed_with_its_children_at_timeout(tmp_path: Path, pids_to_reap) -> None:
    """A script that spawns a sleeping child is killed at its timeout, child included (checked by PID)."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        pid_file = tmp_path / "pids"
        async with running_agent(state, setup=_fast):
            script = 'sleep 300 &\necho "$$ $!" > "$1"\necho started\nwait\n'
            params = {"interpreter": "sh", "args": [str(pid_file)]}
            grant = grant_for(server, devices=[state.device_id])
            task = await submit(server, grant, device=state.device_id, params=params, script=script,
                                signature=sign_script(server, script, params), timeout_s=1.5)
            await wait_until(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 2, timeout=15,
                             what="script started its child")
            parent, child = (int(p) for p in pid_file.read_text().split())
            pids_to_reap.extend([parent, child])
            assert psutil.pid_exists(child)
            await wait_until(lambda: _final(server, task["id"]), timeout=15, what="timeout result")
            run = await run_of(server, task["id"])
            assert run["status"] == "timed_out" and run["stdout"] == "started\n"
            await wait_until(lambda: not _alive(parent) and not _alive(child), timeout=5, what="tree gone")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_cancel_stops_a_running_script_and_its_tree(tmp_path: Path, pids_to_reap) -> None:
    """Cancelling a task (as `helpline admin task cancel` does) kills the running script tree; status cancelled."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        pid_file = tmp_path / "pids"
        async with running_agent(state, setup=_fast):
            script = 'sleep 300 &\necho "$$ $!" > "$1"\nwait\n'
            params = {"interpreter": "sh", "args": [str(pid_file)]}
            grant = grant_for(server, devices=[state.device_id])
            task = await submit(server, grant, device=state.device_id, params=params, script=script,
                                signature=sign_script(server, script, params), timeout_s=600)
            await wait_until(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 2, timeout=15,
                             what="script running")
            parent, child = (int(p) for p in pid_file.read_text().split())
            pids_to_reap.extend([parent, child])
            await service.cancel_task(server.db, task["id"], actor="admin2")
            await wait_until(lambda: _is(server, task["id"], "cancelled"), timeout=15, what="cancelled result")
            assert "cancelled" in (await run_of(server, task["id"]))["reason"]
            await wait_until(lambda: not _alive(parent) and not _alive(child), timeout=5, what="tree gone")


async def test_grant_revoked_on_the_agent_refuses_a_waiting_task(tmp_path: Path) -> None:
    """A grant the agent learns is revoked (its grant book) refuses the task that was waiting under it."""
    from agent.grants import GrantBook
    from protocol.grants import parse_document

    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1

        def setup(agent: Agent) -> None:
            _fast(agent)
            agent.tasks.local = lambda: datetime(2026, 1, 5, 1, 0, tzinfo=UTC)

        async with running_agent(state, setup=setup):
            grant = grant_for(server, devices=[state.device_id],
                              windows=[Window(days=[0], start="02:00", end="04:00")])
            task = await submit(server, grant, device=state.device_id, action="clear_temp",
                                params={"targets": ["tmp"], "dry_run": True})
            await wait_until(lambda: _is(server, task["id"], "waiting"), timeout=15, what="task waiting")
            GrantBook.for_state(state.directory, state.device_id, state.grant_pub_path).revoke(
                parse_document(grant.document).grant_id)
            await wait_until(lambda: _is(server, task["id"], "refused"), timeout=15, what="refused after revoke")
            assert "revoked" in (await run_of(server, task["id"]))["reason"]
