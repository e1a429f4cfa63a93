"""The remote shell under an approver-signed grant, with nobody at the device (issue 16).

A real server and an in-process agent pinned to a test org's root, on Xvfb with nobody logged in (the scripted
consent UI has no answers: any prompt would fail the session), the device policy switching the shell on, a real
pty (``sh`` as ``[agent] session_user``). Each session starts under a two-approver grant and the technician's
proof (tests/authority_helpers.py). A grant naming ``shell`` gets a working shell; a control grant without it
gets ``shell.error shell_refused`` naming the grant, and no pty. Both are audited by the server.
"""

from __future__ import annotations

import asyncio
import json
import pwd
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.consent.scripted import ScriptedConsentUI
from protocol import shell as sh
from server import audit
from tests.authority_helpers import make_org, publish, submit, unattended_session
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import api, configure_agent, install_test_auth, write_policy
from tests.test_shell_e2e import shell_viewer
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

USER = "nobody"


async def _streaming(server: Any, org: Any, device_id: str, grant_id: str) -> str:
    session = await unattended_session(server, org, device_id, grant_id, mode="control")
    assert session["state"] != "ended", json.dumps(session)
    session_id = str(session["session_id"])

    async def streams() -> bool:  # the proof route may answer before the device's answer is recorded
        _status, body = await api(server, "GET", f"/api/v1/sessions/{session_id}", "ann")
        assert body["state"] != "ended", body
        return bool(body["state"] == "streaming" and body["mode"] == "control" and body["answered_by"] == "grant")

    await wait_until(streams, timeout=20, what="the control session streams")
    return session_id


async def _shell_records(server: Any, session_id: str) -> dict[str, list[dict[str, Any]]]:
    """The server's session.shell_* audit records of one session, by action (newest first)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for row in await audit.recent(server.db, limit=200):
        details = row["details"]
        details = json.loads(details) if isinstance(details, str) else dict(details)
        if str(row["action"]).startswith("session.shell_") and details.get("session_id") == session_id:
            found.setdefault(str(row["action"]), []).append(details)
    return found


async def test_shell_under_a_grant_naming_it_and_refused_without(tmp_path: Path,
                                                                 xvfb: XvfbHandle) -> None:  # noqa: F811
    """Grant with ``shell``: no prompt, the shell runs as session_user on a pty, exit 3 audited with the user;
    grant with view+control only: shell_refused naming the grant and ``shell``, audited as refused by the device."""
    org = make_org()
    uid = pwd.getpwnam(USER).pw_uid
    policy = write_policy(tmp_path / "policy.toml", allow_shell=True)
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        await publish(server, org)
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, trust_root_sha256=org.root.fingerprint,
                             policy_file=policy)
        ui = ScriptedConsentUI([])
        setup = configure_agent(xvfb.display, ui, users=(), shell_user=USER)
        async with running_agent(state, config, setup=setup) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            await submit(server, org.grant("grant-shell", actions=["view", "control", "shell"]))
            await submit(server, org.grant("grant-control", actions=["view", "control"]))

            sid = await _streaming(server, org, state.device_id, "grant-shell")
            async with shell_viewer(server, sid) as viewer:
                await viewer.wait_for(lambda v: v.caps is not None, 30)
                assert viewer.caps is not None and "shell" in viewer.caps.allowed
                await viewer.shell_send(sh.Open(cols=100, rows=30))
                await viewer.until(lambda: bool(viewer.of(sh.Opened)), 30, "shell.opened")
                opened = viewer.of(sh.Opened)[0]
                assert isinstance(opened, sh.Opened) and (opened.uid, opened.user) == (uid, USER)
                assert opened.tty.startswith("/dev/pts/") and not opened.root
                await viewer.keys("echo UNATTENDED-$(id -u)-$((6*7))\r")
                await viewer.until(lambda: f"UNATTENDED-{uid}-42".encode() in viewer.output, 30, "the output")
                await viewer.keys("exit 3\r")
                await viewer.until(lambda: bool(viewer.of(sh.Exit)), 30, "shell.exit")
                ended = viewer.of(sh.Exit)[0]
                assert isinstance(ended, sh.Exit) and ended.status == 3

            async def first_audited() -> bool:
                return {"session.shell_started", "session.shell_ended"} <= set(await _shell_records(server, sid))

            await wait_until(first_audited, timeout=15, what="the shell's start and end audited")
            records = await _shell_records(server, sid)
            [started] = records["session.shell_started"]
            assert (started["uid"], started["user"]) == (uid, USER)
            assert [e["status"] for e in records["session.shell_ended"]] == [3]
            await api(server, "POST", f"/api/v1/sessions/{sid}/end", "ann", {})

            async def first_over() -> bool:
                _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
                return bool(body["state"] == "ended") and not agent.sessions.running

            await wait_until(first_over, timeout=20, what="the first session ended on both ends")

            sid2 = await _streaming(server, org, state.device_id, "grant-control")
            async with shell_viewer(server, sid2) as viewer:
                await viewer.wait_for(lambda v: v.caps is not None, 30)
                assert viewer.caps is not None and "shell" not in viewer.caps.allowed
                assert "grant-control" in viewer.caps.refused["shell"]
                await viewer.shell_send(sh.Open())
                await viewer.keys("touch /tmp/should-not-exist-unattended\r")
                await viewer.until(lambda: len(viewer.of(sh.Error)) >= 2, 30, "the refusals")
                errors = {e.code: e.message for e in viewer.of(sh.Error) if isinstance(e, sh.Error)}
                assert set(errors) == {"shell_refused", "no_shell"}, errors  # no_shell: the keys reached no pty
                assert "grant-control" in errors["shell_refused"] and "'shell'" in errors["shell_refused"]
                assert not viewer.of(sh.Opened) and not viewer.output

            async def refusal_audited() -> bool:
                refusals = (await _shell_records(server, sid2)).get("session.shell_refused", [])
                return any(r["code"] == "shell_refused" for r in refusals)

            await wait_until(refusal_audited, timeout=15, what="the refusal audited")
            refused = {r["code"]: r for r in (await _shell_records(server, sid2))["session.shell_refused"]}
            assert refused["shell_refused"]["by"] == "device"
            assert "grant-control" in str(refused["shell_refused"]["message"])
            assert "session.shell_started" not in await _shell_records(server, sid2)
            assert not Path("/tmp/should-not-exist-unattended").exists()
            assert ui.requests == []  # nobody was ever asked
