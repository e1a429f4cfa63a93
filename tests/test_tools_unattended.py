"""Ending a process under an approver-signed grant (issue 16): a control grant alone lets the technician list but
not end (the device refuses: the grant does not name ``processes``); a grant that names it ends the process.

A real server and an in-process agent pinned to a test org's root, on Xvfb with nobody logged in; each session
starts under a two-approver grant and the technician's proof (tests/authority_helpers.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil

from agent.config import AgentConfig
from agent.consent.scripted import ScriptedConsentUI
from tests.authority_helpers import make_org, publish, submit, unattended_session
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import api, configure_agent, install_test_auth, viewer_for
from tests.test_tools_e2e import sleeper
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


async def _streaming(server, org, device_id: str, grant_id: str) -> str:  # type: ignore[no-untyped-def]
    session = await unattended_session(server, org, device_id, grant_id, mode="control")
    assert session["answered_by"] == "grant", (session.get("state"), session.get("end_reason"), session)
    session_id = str(session["session_id"])

    async def streams() -> bool:
        _status, body = await api(server, "GET", f"/api/v1/sessions/{session_id}", "ann")
        return bool(body["state"] == "streaming" and body["mode"] == "control")

    await wait_until(streams, timeout=20, what="the control session streams")
    return session_id


async def test_grant_must_name_processes_to_end_one(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Under a view+control grant the device answers 403 no_authority naming the missing action and the process
    lives; under a grant that also names ``processes`` it is ended by SIGTERM."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        await publish(server, org)
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, trust_root_sha256=org.root.fingerprint)
        setup = configure_agent(xvfb.display, ScriptedConsentUI([]), users=())
        async with running_agent(state, config, setup=setup) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            await submit(server, org.grant("grant-control", actions=["view", "control"]))
            await submit(server, org.grant("grant-processes", actions=["view", "control", "processes"]))
            device = state.device_id
            with sleeper() as proc:
                sid = await _streaming(server, org, device, "grant-control")
                async with viewer_for(server, sid) as viewer:
                    await viewer.wait_for_updates(1, 30)
                    status, body = await api(server, "GET", f"/api/v1/devices/{device}/processes", "ann")
                    assert status == 200 and any(p["pid"] == proc.pid for p in body["processes"])
                    status, body = await api(server, "POST", f"/api/v1/devices/{device}/processes/{proc.pid}/end",
                                             "ann", {"session_id": sid})
                    assert status == 403 and body["error"]["code"] == "no_authority", body
                    assert "'processes'" in body["error"]["message"]
                    assert proc.poll() is None
                await wait_until(lambda: not agent.sessions.running, timeout=20, what="the first session ended")

                sid = await _streaming(server, org, device, "grant-processes")
                async with viewer_for(server, sid) as viewer:
                    await viewer.wait_for_updates(1, 30)
                    status, body = await api(server, "POST", f"/api/v1/devices/{device}/processes/{proc.pid}/end",
                                             "ann", {"session_id": sid})
                    assert (status, body) == (200, {"outcome": "ended by SIGTERM"})
                    proc.wait(10)
                    assert not psutil.pid_exists(proc.pid)
