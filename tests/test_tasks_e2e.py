"""Tasks end to end over real mTLS: approver-signed task authorizations, refusals, windows, timeouts, results."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from agent.authority import audit_path
from agent.authority.audit import DeviceAudit
from agent.runtime import Agent
from protocol.grants import Window
from server import audit
from server.authority import repository as documents
from server.errors import ApiError
from server.tasks import service
from server.tasks.feature import SCHEDULER
from server.tasks.status import FINAL
from tests.harness import enroll_agent, running_server, wait_until
from tests.tasks_helpers import authorize, make_org, run_of, submit, task_agent


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


async def _final(server, task_id: str) -> bool:
    return (await _status(server, task_id)) in FINAL


async def _is(server, task_id: str, status: str) -> bool:
    return (await _status(server, task_id)) == status


async def _tamper(server, task: dict, **columns: object) -> None:
    """What an intruder with the database does: change the stored task, then let its run go out now."""
    for name, value in columns.items():
        assert name in ("script", "params", "action")
        await server.db.execute(f"UPDATE tasks SET {name} = ? WHERE id = ?", (value, task["id"]))
    await server.db.execute("UPDATE task_runs SET not_before = 0 WHERE task_id = ?", (task["id"],))


def _device_audit(state) -> list[dict]:
    return [e for e in DeviceAudit(audit_path(state)).entries() if e["event"].startswith("task.")]


async def test_approved_script_runs_and_output_and_exit_code_arrive(tmp_path: Path) -> None:
    """A script two approvers authorized runs on the agent; stdout, stderr and exit code reach the server, and
    the device's own audit names the approvers and the occurrence."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        async with task_agent(server, state, org, setup=_fast):
            script = 'echo "hello $1"\necho oops >&2\nexit 3\n'
            params = {"interpreter": "sh", "args": ["world"]}
            document = authorize(org, devices=[state.device_id], script=script, params=params)
            task = await submit(server, document, device=state.device_id, script=script)
            await wait_until(lambda: _final(server, task["id"]), timeout=15, what="result stored")
            run = await run_of(server, task["id"])
            assert run["status"] == "failed" and run["exit_code"] == 3
            assert run["stdout"] == "hello world\n" and run["stderr"] == "oops\n"
            assert run["started_at"] <= run["ended_at"]
            assert "task.result" in await _audit_actions(server)
            assert (await audit.verify_chain(server.db)).ok
            (accepted,) = _device_audit(state)
            assert accepted["event"] == "task.accepted" and accepted["run_id"] == run["id"]
            assert accepted["approvers"] == ["Alice", "Bob"] and accepted["occurrence"].endswith("@once")


async def test_tampered_script_and_params_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    """Script bytes or parameters changed in the server's database after approval, and a script approved by one
    approver only, are refused by the device with the reason; nothing runs; each refusal is audited on both sides."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        touched = tmp_path / "ran"
        async with task_agent(server, state, org, setup=_fast):
            good = f"touch {touched}\n"
            later = time.time() + 3600
            tasks = []
            for tamper in ({"script": good + "rm -rf /important\n"}, {"params": '{"interpreter": "bash"}'}):
                document = authorize(org, devices=[state.device_id], script=good, params={"interpreter": "sh"})
                task = await submit(server, document, device=state.device_id, script=good, run_at=later)
                await _tamper(server, task, **tamper)
                tasks.append(task)
            one = authorize(org, devices=[state.device_id], script=good, params={"interpreter": "sh"},
                            signers=("alice",))
            tasks.append(await submit(server, one, device=state.device_id, script=good))
            for task in tasks:
                await wait_until(lambda t=task: _final(server, t["id"]), timeout=15, what="refusal stored")
            runs = [await run_of(server, t["id"]) for t in tasks]
            assert [r["status"] for r in runs] == ["refused"] * 3, runs
            reasons = [r["reason"] for r in runs]
            assert "the script is not the one the approvers signed" in reasons[0]
            assert "the parameters are not the ones the approvers signed" in reasons[1]
            assert "needs 2 distinct approvers, has 1" in reasons[2]
            assert not touched.exists()
            assert (await _audit_actions(server)).count("task.refused") == 3
            refused = _device_audit(state)
            assert [e["event"] for e in refused] == ["task.refused"] * 3
            assert sorted(e["reason"] for e in refused) == sorted(reasons)


async def test_bad_requests_and_bad_documents_are_refused_with_reasons(tmp_path: Path) -> None:
    """Approved but bad parameters and an expired document are refused by the agent with clear reasons; an
    unknown action, a grant document and a document that does not name the target are refused by the server."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        async with task_agent(server, state, org, setup=_fast):
            mine = [state.device_id]
            now = time.time()
            cases = [
                (await submit(server, authorize(org, devices=mine, action="restart_service",
                                                params={"name": "-bad;rm"}), device=state.device_id),
                 "bad parameters"),
                (await submit(server, authorize(org, devices=mine, action="clear_temp", params=HARMLESS,
                                                not_before=now - 7200, not_after=now - 3600),
                              device=state.device_id), "expired at"),
            ]
            for task, expected in cases:
                await wait_until(lambda t=task: _final(server, t["id"]), timeout=15, what="refusal")
                run = await run_of(server, task["id"])
                assert run["status"] == "refused", run
                assert expected in run["reason"], run["reason"]
            with pytest.raises(ApiError) as unknown:
                await submit(server, authorize(org, devices=mine, action="format_disk"), device=state.device_id)
            assert unknown.value.code == "unknown_action"
            grant = org.grant("grant-lab-9")
            await store_any(server, grant)
            with pytest.raises(ApiError) as wrong_kind:
                await service.task_document(server.db, "grant-lab-9")
            assert wrong_kind.value.code == "document_unusable"
            with pytest.raises(ApiError) as elsewhere:
                await submit(server, authorize(org, devices=["dev-other"], action="clear_temp", params=HARMLESS),
                             device=state.device_id)
            assert elsewhere.value.code == "not_covered"


async def store_any(server, document) -> None:
    from server.authority import repository as documents

    await documents.create_document(server.db, document, actor="user:test")


async def test_task_outside_window_waits_then_runs_when_window_opens(tmp_path: Path) -> None:
    """A task that arrives outside its signed window waits (reported as waiting) and runs once it opens."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        local = {"now": datetime(2026, 1, 5, 1, 0, tzinfo=UTC)}  # a Monday, 01:00 device time

        def setup(agent: Agent) -> None:
            _fast(agent)
            agent.tasks.local = lambda: local["now"]

        touched = tmp_path / "ran"
        async with task_agent(server, state, org, setup=setup):
            script, params = f"touch {touched}\n", {"interpreter": "sh", "args": []}
            document = authorize(org, devices=[state.device_id], script=script, params=params,
                                 windows=[Window(days=[0, 1, 2, 3, 4, 5, 6], start="02:00", end="04:00")])
            task = await submit(server, document, device=state.device_id, script=script)
            await wait_until(lambda: _is(server, task["id"], "waiting"), timeout=15, what="task waiting")
            assert "window" in (await run_of(server, task["id"]))["reason"]
            await asyncio.sleep(0.3)  # several poll intervals pass with the window still closed
            assert not touched.exists()
            local["now"] = datetime(2026, 1, 5, 2, 30, tzinfo=UTC)
            await wait_until(lambda: _is(server, task["id"], "succeeded"), timeout=15, what="task ran")
            assert touched.exists()


async def test_waiting_task_is_refused_when_its_document_expires_before_the_window(tmp_path: Path) -> None:
    """A waiting task whose authorization expires before the window opens is refused and never runs."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        clock = {"now": time.time()}

        def setup(agent: Agent) -> None:
            _fast(agent)
            agent.tasks.local = lambda: datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
            agent.tasks.clock = lambda: clock["now"]

        touched = tmp_path / "ran"
        async with task_agent(server, state, org, setup=setup):
            script, params = f"touch {touched}\n", {"interpreter": "sh", "args": []}
            document = authorize(org, devices=[state.device_id], script=script, params=params,
                                 not_after=clock["now"] + 600, windows=[Window(days=[0], start="02:00", end="04:00")])
            task = await submit(server, document, device=state.device_id, script=script)
            await wait_until(lambda: _is(server, task["id"], "waiting"), timeout=15, what="task waiting")
            clock["now"] += 601
            await wait_until(lambda: _is(server, task["id"], "refused"), timeout=15, what="refused at expiry")
            run = await run_of(server, task["id"])
            assert "expired" in run["reason"] and "waiting" in run["reason"]
            assert not touched.exists()


async def test_hanging_script_is_killed_with_its_children_at_timeout(tmp_path: Path, pids_to_reap) -> None:
    """A script that spawns a sleeping child is killed at its timeout, child included (checked by PID)."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        pid_file = tmp_path / "pids"
        async with task_agent(server, state, org, setup=_fast):
            script = 'sleep 300 &\necho "$$ $!" > "$1"\necho started\nwait\n'
            params = {"interpreter": "sh", "args": [str(pid_file)]}
            document = authorize(org, devices=[state.device_id], script=script, params=params)
            task = await submit(server, document, device=state.device_id, script=script, timeout_s=1.5)
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
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        pid_file = tmp_path / "pids"
        async with task_agent(server, state, org, setup=_fast):
            script = 'sleep 300 &\necho "$$ $!" > "$1"\nwait\n'
            params = {"interpreter": "sh", "args": [str(pid_file)]}
            document = authorize(org, devices=[state.device_id], script=script, params=params)
            task = await submit(server, document, device=state.device_id, script=script, timeout_s=600)
            await wait_until(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 2, timeout=15,
                             what="script running")
            parent, child = (int(p) for p in pid_file.read_text().split())
            pids_to_reap.extend([parent, child])
            await service.cancel_task(server.db, task["id"], actor="admin2")
            await wait_until(lambda: _is(server, task["id"], "cancelled"), timeout=15, what="cancelled result")
            assert "cancelled" in (await run_of(server, task["id"]))["reason"]
            await wait_until(lambda: not _alive(parent) and not _alive(child), timeout=5, what="tree gone")


async def test_a_revoked_document_refuses_the_task_waiting_under_it(tmp_path: Path) -> None:
    """A revocation list naming the task's document (signed by the revoker, relayed by the server) refuses the
    task that was waiting for its window."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1

        def setup(agent: Agent) -> None:
            _fast(agent)
            agent.tasks.local = lambda: datetime(2026, 1, 5, 1, 0, tzinfo=UTC)

        async with task_agent(server, state, org, setup=setup) as agent:
            document = authorize(org, devices=[state.device_id], action="clear_temp", params=HARMLESS,
                                 windows=[Window(days=[0], start="02:00", end="04:00")])
            task = await submit(server, document, device=state.device_id)
            await wait_until(lambda: _is(server, task["id"], "waiting"), timeout=15, what="task waiting")
            doc_id = task["document_id"]
            async with server.db.transaction() as tx:
                await documents.put_revocations(tx, org.revocations(documents=(doc_id,)), actor="user:test")
            await wait_until(lambda: agent.parts.authority.store.revocation_sequence == 2, what="list 2 taken")
            await wait_until(lambda: _is(server, task["id"], "refused"), timeout=15, what="refused after revoke")
            assert f"task {doc_id} has been revoked" in (await run_of(server, task["id"]))["reason"]
