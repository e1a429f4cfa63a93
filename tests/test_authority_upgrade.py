"""View → control of an unattended session: the device asks the technician for a fresh proof, never the empty desk.

A real server and an in-process agent pinned to a test org's root, on Xvfb with nobody logged in (so no user
can be asked). The session starts under a two-approver grant with Dave's proof for *view*; asking for control
makes the device send a new challenge for *control*: without an answer the upgrade is refused, with Dave's
signature over the new nonce it is allowed, and a grant that allows view only refuses at once. Every outcome
is in the device's own audit log (``session.upgrade``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec

from agent.authority.audit import verify as verify_audit
from agent.config import AgentConfig
from agent.consent.scripted import ScriptedConsentUI
from agent.state import AgentState
from server.app import HelplineServer
from tests.authority_helpers import Org, make_org, publish, submit, unattended_session
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import api, configure_agent, install_test_auth, viewer_for, wait_for_audit
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

PROOF_TIMEOUT_S = 4.0


def _device_audit(state: AgentState) -> list[dict[str, Any]]:
    path = state.directory / "device-audit.jsonl"
    assert verify_audit(path).intact
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _details(record: dict[str, Any]) -> dict[str, Any]:
    details = record["details"]
    return dict(json.loads(details) if isinstance(details, str) else details)


async def _session(server: HelplineServer, session_id: str) -> dict[str, Any]:
    _status, body = await api(server, "GET", f"/api/v1/sessions/{session_id}", "ann")
    return dict(body)


async def _challenge(server: HelplineServer, session_id: str) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def challenged() -> bool:
        seen[:] = [await _session(server, session_id)]
        return seen[0]["challenge"] is not None

    await wait_until(challenged, timeout=15, what="the device's challenge for the upgrade")
    return dict(seen[0]["challenge"])


async def _mode_settled(server: HelplineServer, session_id: str) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def settled() -> bool:
        seen[:] = [await _session(server, session_id)]
        return seen[0]["pending_mode"] is None

    await wait_until(settled, timeout=PROOF_TIMEOUT_S + 15, what="the device's answer to the mode change")
    return seen[0]


async def _streaming(server: HelplineServer, org: Org, device_id: str, grant_id: str) -> str:
    session = await unattended_session(server, org, device_id, grant_id)
    assert session["answered_by"] == "grant", session
    session_id = str(session["session_id"])

    async def streams() -> bool:
        return bool((await _session(server, session_id))["state"] == "streaming")

    await wait_until(streams, timeout=15, what="the session streams")
    return session_id


async def test_upgrading_an_unattended_session_needs_the_technicians_fresh_proof(
        tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """No answer to the control challenge: refused and audited on the device; Dave's signature over the new nonce:
    control, audited with his verified name; a view-only grant: refused at once. Nobody is ever prompted."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        await publish(server, org)
        ui = ScriptedConsentUI([])
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, trust_root_sha256=org.root.fingerprint,
                             unattended_proof_timeout_s=PROOF_TIMEOUT_S)
        async with running_agent(state, config, setup=configure_agent(xvfb.display, ui, users=())) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            await submit(server, org.grant("grant-ctl", actions=["view", "control"]))
            await submit(server, org.grant("grant-view"))
            session_id = await _streaming(server, org, state.device_id, "grant-ctl")
            async with viewer_for(server, session_id) as viewer:
                await viewer.wait_for_updates(1, 15)
                path = f"/api/v1/sessions/{session_id}/mode"

                # 1. The device challenges for control; nobody answers: refused, still view.
                status, body = await api(server, "POST", path, "ann", {"mode": "control"})
                assert status == 202 and body["pending_mode"] == "control", body
                challenge = await _challenge(server, session_id)
                assert challenge["action"] == "control" and challenge["document_id"] == "grant-ctl", challenge
                unanswered = challenge["nonce"]
                settled = await _mode_settled(server, session_id)
                assert settled["mode"] == "view" and settled["challenge"] is None, settled
                refused = await wait_for_audit(server, "session.mode_refused")
                no_proof = f"technician proof refused: no technician proof arrived within {PROOF_TIMEOUT_S:g} s"
                assert _details(refused)["reason"] == no_proof, refused
                [first] = [e for e in _device_audit(state) if e["event"] == "session.upgrade"]
                assert first["accepted"] is False and first["reason"] == no_proof and first["mode"] == "control"

                # 2. Dave signs the fresh challenge: control, by grant.
                status, body = await api(server, "POST", path, "ann", {"mode": "control"})
                assert status == 202, body
                challenge = await _challenge(server, session_id)
                assert challenge["nonce"] != unanswered  # a fresh nonce for every attempt
                status, answer = await api(server, "POST", f"/api/v1/sessions/{session_id}/proof", "ann",
                                           msgspec.to_builtins(org.proof(challenge)))
                assert status == 200, answer
                settled = await _mode_settled(server, session_id)
                assert settled["mode"] == "control", settled
                enabled = await wait_for_audit(server, "session.control_enabled")
                assert _details(enabled)["upgrade"] is True and "grant-ctl" in _details(enabled)["consented_by"]
                upgrades = [e for e in _device_audit(state) if e["event"] == "session.upgrade"]
                assert upgrades[-1]["accepted"] is True and upgrades[-1]["technician"] == "Dave", upgrades
                assert upgrades[-1]["by"] == "grant"
                running = agent.sessions.running[session_id]
                assert running.mode == "control" and running.technician == "Dave"
            await api(server, "POST", f"/api/v1/sessions/{session_id}/end", "ann")

            # 3. A grant for view only: the upgrade is refused at once, no challenge.
            session_id = await _streaming(server, org, state.device_id, "grant-view")
            async with viewer_for(server, session_id) as viewer:
                await viewer.wait_for_updates(1, 15)
                status, body = await api(server, "POST", f"/api/v1/sessions/{session_id}/mode", "ann",
                                         {"mode": "control"})
                assert status == 202, body
                settled = await _mode_settled(server, session_id)
                assert settled["mode"] == "view", settled
            last = [e for e in _device_audit(state) if e["event"] == "session.upgrade"][-1]
            assert last["session_id"] == session_id and last["accepted"] is False
            assert "grant grant-view does not allow 'control'" in last["reason"], last
            assert ui.requests == []  # nobody was ever asked: the desk is empty
