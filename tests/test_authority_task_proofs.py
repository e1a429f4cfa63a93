"""Technician-started tasks: a task authorization naming technicians runs only with one of them's proof.

A real server and an in-process agent pinned to a test org's root. Two approvers signed a script task
that names Dave as the technician who starts it. A technician creates the task through the API; the device
sends a fresh nonce for the run (``task.challenge``, shown in the run's ``details.challenge``); Dave's CLI-held
Ed25519 key signs the TechnicianStatement over it (what ``helpline approve prove --run`` does) and the run
starts. The attacker's tries — no proof at all, Dave's genuine signature over another nonce, a proof relayed
by somebody else — run nothing, and each refusal is in the device's own audit log.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any

import msgspec

from agent.authority.audit import verify as verify_audit
from agent.state import AgentState
from certs import ceremony
from protocol.authority import TaskAuthorization, TechnicianStatement
from server.app import HelplineServer
from tests.harness import enroll_agent, running_server, wait_until
from tests.tasks_helpers import make_org, store, task_agent
from tests.test_session_helpers import api, install_test_auth

PROOF_TIMEOUT_S = 4.0
SCRIPT = "echo started-by-dave\n"


def _device_audit(state: AgentState) -> list[dict[str, Any]]:
    path = state.directory / "device-audit.jsonl"
    assert verify_audit(path).intact
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def _start(server: HelplineServer, device_id: str, document_id: str) -> str:
    """Ann starts the task from the API; returns its one run's id."""
    status, body = await api(server, "POST", "/api/v1/tasks", "ann",
                             {"document_id": document_id, "device": device_id, "script": SCRIPT})
    assert status == 201, body
    task_id = body["task"]["id"]
    runs: list[str] = []

    async def created() -> bool:
        _status, detail = await api(server, "GET", f"/api/v1/tasks/{task_id}", "ann")
        runs[:] = [r["run_id"] for r in detail["runs"]]
        return bool(runs)

    await wait_until(created, what="the task's run")
    return runs[0]


async def _wait_run(server: HelplineServer, task_device: str, run_id: str, done: Any, what: str,
                    timeout: float = 20) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def reached() -> bool:
        _status, body = await api(server, "GET", f"/api/v1/devices/{task_device}/tasks", "ann")
        seen[:] = [r for r in body["runs"] if r["run_id"] == run_id]
        return bool(seen) and bool(done(seen[0]))

    await wait_until(reached, timeout=timeout, what=what)
    return seen[0]


async def test_a_task_naming_technicians_runs_only_with_their_proof(tmp_path: Path) -> None:
    """No proof: refused when the challenge expires; Dave's signature over another nonce: refused; relayed by
    anyone but the task's technician: 403; Dave's signature over the device's nonce: the script runs, and the
    device audit names Dave as verified."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent", group="lab")

        def setup(agent: Any) -> None:
            agent.tasks.proof_timeout_s = PROOF_TIMEOUT_S

        async with task_agent(server, state, org, setup=setup):
            now = time.time()
            document = org.sign("task", TaskAuthorization(
                task_id="restart-printing", action="script", script_sha256=hashlib.sha256(SCRIPT.encode()).hexdigest(),
                params={"interpreter": "sh"}, devices=[state.device_id], technician_names=["Dave"],
                not_before=now - 60, not_after=now + 3600, issuer="Alice", issued_at=now))
            document_id = await store(server.db, document)
            device = state.device_id

            def challenged(run: dict[str, Any]) -> bool:
                return run["status"] == "waiting" and "challenge" in run["details"]

            # 1. Nobody answers the device's challenge: the run is refused, nothing ran.
            run_id = await _start(server, device, document_id)
            run = await _wait_run(server, device, run_id, challenged, "the device's challenge")
            challenge = run["details"]["challenge"]
            assert (challenge["action"], challenge["document_id"], challenge["device_id"]) == (
                "tasks", document_id, device), challenge
            assert "to sign the device's challenge" in run["reason"]
            run = await _wait_run(server, device, run_id, lambda r: r["status"] == "refused", "the refusal",
                                  timeout=PROOF_TIMEOUT_S + 20)
            no_proof = f"technician proof refused: no technician proof arrived within {PROOF_TIMEOUT_S:g} s"
            assert run["reason"] == no_proof and "started-by-dave" not in run["stdout"], run

            # 2. The attacker replays the run with Dave's genuine signature over another nonce: refused.
            run_id = await _start(server, device, document_id)
            run = await _wait_run(server, device, run_id, challenged, "the device's challenge")
            captured = ceremony.sign_technician_statement(org.keys["dave"], org.ids["dave"], TechnicianStatement(
                nonce=secrets.token_urlsafe(32), device_id=device, action="tasks", document_id=document_id,
                signed_at=time.time()))
            status, body = await api(server, "POST", f"/api/v1/tasks/runs/{run_id}/proof", "root",
                                     msgspec.to_builtins(captured))
            assert status == 403 and body["error"]["code"] == "forbidden", body  # not the task's technician
            status, body = await api(server, "POST", f"/api/v1/tasks/runs/{run_id}/proof", "ann",
                                     msgspec.to_builtins(captured))
            replayed = "technician proof refused: technician proof is for another nonce (replayed or stale)"
            assert status == 200 and body["status"] == "refused" and body["reason"] == replayed, body
            status, body = await api(server, "POST", f"/api/v1/tasks/runs/{run_id}/proof", "ann",
                                     msgspec.to_builtins(captured))
            assert status == 409, body  # one proof per challenge

            # 3. Dave signs the device's own nonce: the script runs.
            run_id = await _start(server, device, document_id)
            run = await _wait_run(server, device, run_id, challenged, "the device's challenge")
            challenge = run["details"]["challenge"]
            proof = ceremony.sign_technician_statement(org.keys["dave"], org.ids["dave"], TechnicianStatement(
                nonce=challenge["nonce"], device_id=challenge["device_id"], action="tasks",
                document_id=challenge["document_id"], signed_at=time.time()))
            status, body = await api(server, "POST", f"/api/v1/tasks/runs/{run_id}/proof", "ann",
                                     msgspec.to_builtins(proof))
            assert status == 200, body
            run = await _wait_run(server, device, run_id, lambda r: r["status"] == "succeeded", "the run")
            assert "started-by-dave" in run["stdout"], run

        audit = _device_audit(state)
        refused = [e for e in audit if e["event"] == "task.refused" and e["document_id"] == document_id]
        assert [e["reason"] for e in refused] == [no_proof, replayed], refused
        [accepted] = [e for e in audit if e["event"] == "task.accepted" and e["document_id"] == document_id]
        assert accepted["technician"] == "Dave" and "technician Dave verified" in accepted["reason"], accepted
