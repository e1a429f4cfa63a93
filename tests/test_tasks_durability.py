"""Task results survive an agent SIGKILL and a server restart (real agent subprocess)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from server.tasks.feature import SCHEDULER
from tests.harness import enroll_agent, running_server, wait_until
from tests.tasks_helpers import authorize, make_org, publish_authority, run_of, submit

ROOT = Path(__file__).resolve().parent.parent
#: The org whose approvers authorize the scripts; the agent subprocesses are installed with its root's fingerprint.
ORG = make_org()


@pytest.fixture
def agents():
    """Starts `helpline agent run` subprocesses; every one is killed by PID at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "HELPLINE_TRUST_ROOT_SHA256": ORG.root.fingerprint}
        with log.open("ab") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen([sys.executable, "-m", "helpline", "agent", "run", "--state", str(state_dir)],
                                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _unacked(state_dir: Path) -> list[tuple[str, int]]:
    db = sqlite3.connect(state_dir / "tasks.db")
    try:
        return db.execute("SELECT run_id, acked FROM runs WHERE state = 'done'").fetchall()
    finally:
        db.close()


async def test_result_survives_agent_sigkill_and_server_restart(tmp_path: Path, agents) -> None:
    """A result produced while the server is down is kept through an agent SIGKILL and delivered after restarts."""
    srv, state_dir = tmp_path / "srv", tmp_path / "agent"
    started, release = tmp_path / "started", tmp_path / "release"
    log = tmp_path / "agent.log"
    async with running_server(srv) as server:
        ports = {"agent_port": server.agent_port, "console_port": server.console_port}
        state = await enroll_agent(server, state_dir, group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        await publish_authority(server.db, ORG)
        agent = agents(state_dir, log)
        await wait_until(lambda: _holds_authority(server, state.device_id), timeout=30, what="agent holds authority")
        script = 'touch "$1"\nwhile [ ! -e "$2" ]; do sleep 0.05; done\necho done\n'
        params = {"interpreter": "sh", "args": [str(started), str(release)]}
        task = await submit(server, authorize(ORG, devices=[state.device_id], script=script, params=params),
                            device=state.device_id, script=script)
        await wait_until(started.exists, timeout=30, what="script running in the agent subprocess")
    # Server is down; the script finishes now and its result can only go to the agent's ledger.
    release.touch()
    await wait_until(lambda: (state_dir / "tasks.db").exists() and _unacked(state_dir) != [], timeout=15,
                     what="result persisted")
    assert _unacked(state_dir)[0][1] == 0
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait(10)
    async with running_server(srv, **ports) as server:
        server.console_app[SCHEDULER].tick_s = 0.1
        assert (await run_of(server, task["id"]))["status"] == "sent"
        agents(state_dir, log)
        await wait_until(lambda: _done(server, task["id"]), timeout=30, what="result delivered after restarts")
        run = await run_of(server, task["id"])
        assert run["status"] == "succeeded" and run["exit_code"] == 0 and run["stdout"] == "done\n"
        await wait_until(lambda: _unacked(state_dir)[0][1] == 1, timeout=10, what="agent saw the ack")


async def _holds_authority(server, device_id: str) -> bool:
    row = await server.db.fetchone("SELECT unattended_ok FROM authority_device_status WHERE device_id = ?",
                                   (device_id,))
    return row is not None and bool(row["unattended_ok"])


async def _done(server, task_id: str) -> bool:
    return (await run_of(server, task_id))["status"] == "succeeded"


async def test_task_cut_off_by_sigkill_is_reported_not_rerun(tmp_path: Path, agents) -> None:
    """A task running when the agent is SIGKILLed is reported as failed (outcome unknown) after restart, not re-run."""
    srv, state_dir, log = tmp_path / "srv", tmp_path / "agent", tmp_path / "agent.log"
    counter = tmp_path / "count"
    async with running_server(srv) as server:
        state = await enroll_agent(server, state_dir, group="lab")
        server.console_app[SCHEDULER].tick_s = 0.1
        await publish_authority(server.db, ORG)
        agent = agents(state_dir, log)
        await wait_until(lambda: _holds_authority(server, state.device_id), timeout=30, what="agent holds authority")
        script = 'echo x >> "$1"\necho $$ > "$1.pid"\nsleep 2\n'
        params = {"interpreter": "sh", "args": [str(counter)]}
        task = await submit(server, authorize(ORG, devices=[state.device_id], script=script, params=params),
                            device=state.device_id, script=script)
        pid_file = Path(f"{counter}.pid")
        await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", timeout=30,
                         what="script running")
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)  # the orphaned task process group
        agents(state_dir, log)
        await wait_until(lambda: _status_is(server, task["id"], "failed"), timeout=30, what="cut-off reported")
        run = await run_of(server, task["id"])
        assert "stopped while this task was running" in run["reason"]
        assert counter.read_text() == "x\n"


async def _status_is(server, task_id: str, status: str) -> bool:
    return (await run_of(server, task_id))["status"] == status
