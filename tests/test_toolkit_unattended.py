"""The toolkit under approver-signed grants: only what the grant names, fetches only inside its paths.

A real server and an in-process agent pinned to a test org's root, on Xvfb with nobody logged in (nobody can
be asked); each session starts under a two-approver grant and the technician's proof.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from agent.config import AgentConfig
from agent.consent.scripted import ScriptedConsentUI
from protocol import toolkit as tk
from tests.authority_helpers import make_org, publish, submit, unattended_session
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import api, configure_agent, install_test_auth, viewer_for
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


async def _streaming(server, org, device_id: str, grant_id: str) -> str:  # type: ignore[no-untyped-def]
    session = await unattended_session(server, org, device_id, grant_id)
    assert session["answered_by"] == "grant", session
    session_id = str(session["session_id"])

    async def streams() -> bool:
        _status, body = await api(server, "GET", f"/api/v1/sessions/{session_id}", "ann")
        return bool(body["state"] == "streaming")

    await wait_until(streams, timeout=15, what="the session streams")
    return session_id


async def test_files_grant_fetches_only_inside_its_paths_and_other_grants_get_no_files(
        tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """A grant naming files and /…/logs/*.log: a log is fetched with its hash, a file beside it and a symlink into
    the folder are refused, clipboard is not offered; a view-only grant gets no files at all."""
    logs = tmp_path / "logs"
    logs.mkdir()
    wanted = logs / "app.log"
    wanted.write_bytes(os.urandom(200 * 1024 + 7))
    (tmp_path / "secret.txt").write_text("not for the technician")
    (logs / "sneaky.log").symlink_to(tmp_path / "secret.txt")
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        await publish(server, org)
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, trust_root_sha256=org.root.fingerprint)
        setup = configure_agent(xvfb.display, ScriptedConsentUI([]), users=())
        async with running_agent(state, config, setup=setup) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            await submit(server, org.grant("grant-files", actions=["view", "files"], paths=[f"{logs}/*.log"]))
            await submit(server, org.grant("grant-view"))

            sid = await _streaming(server, org, state.device_id, "grant-files")
            async with viewer_for(server, sid) as viewer:
                await viewer.wait_for(lambda v: v.caps is not None, 20)
                assert viewer.caps is not None and viewer.caps.allowed == ["chat", "files"]
                assert "grant-files" in viewer.caps.refused["clipboard"]
                end = await viewer.fetch_file(str(wanted), str(tmp_path / "copy.log"))
                assert isinstance(end, tk.FileEnd) and end.sha256 == hashlib.sha256(wanted.read_bytes()).hexdigest()
                beside = await viewer.fetch_file(str(tmp_path / "secret.txt"), str(tmp_path / "x"))
                assert isinstance(beside, tk.FileError) and beside.code == "not_granted"
                linked = await viewer.fetch_file(str(logs / "sneaky.log"), str(tmp_path / "y"))
                assert isinstance(linked, tk.FileError) and linked.code == "target_unsafe"
                deeper = await viewer.fetch_file(str(logs / ".." / "secret.txt"), str(tmp_path / "z"))
                assert isinstance(deeper, tk.FileError) and deeper.code == "bad_path"
            await wait_until(lambda: not agent.sessions.running, timeout=20, what="the first session ended")

            sid2 = await _streaming(server, org, state.device_id, "grant-view")
            async with viewer_for(server, sid2) as viewer:
                await viewer.wait_for(lambda v: v.caps is not None, 20)
                assert viewer.caps is not None and "files" not in viewer.caps.allowed
                refused = await viewer.fetch_file(str(wanted), str(tmp_path / "no.log"))
                assert isinstance(refused, tk.FileError) and refused.code == "files_refused"
