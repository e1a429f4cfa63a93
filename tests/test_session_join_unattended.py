"""Joining an unattended session (issue 16): the grant must name the joiner, who proves who they are.

Real processes as in :mod:`tests.test_authority_sessions` (``helpline trust``/``approve`` ceremony, a real
``helpline server`` and ``helpline agent run`` on Xvfb with nobody logged in): Dave runs a session under a grant
naming Dave and Erin; Erin is invited, joins, the device challenges her and starts her view only after her
signature verifies; a joiner who never proves is refused when the device's proof timeout runs out.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.viewer import Viewer
from tests.procs import free_port, helpline, spawn, wait_for, wait_for_port
from tests.test_authority_sessions import PASSPHRASE, PROOF_TIMEOUT_S, Org, certify, draft, init_server_pki, revocations
from tests.xvfb import XvfbHandle, start_xvfb

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    """An org with approvers Alice and Bob, technicians Dave and Erin (accounts in group lab), one device."""
    tmp = tmp_path_factory.mktemp("join-unattended")
    (tmp / "pass.txt").write_text(PASSPHRASE + "\n")
    (tmp / "workstation").mkdir()
    data = tmp / "data"
    init_server_pki(data / "pki")
    agent_port, console_port = free_port(), free_port()
    config = tmp / "helpline.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\nhost = "127.0.0.1"\nkeepalive_s = 5.0\n')
    env = {"HELPLINE_AGENT_PORT": str(agent_port), "HELPLINE_CONSOLE_PORT": str(console_port)}
    trust = tmp / "workstation" / "root"
    out = helpline("trust", "init", "--out", str(trust), "--passphrase-file", str(tmp / "pass.txt")).stdout
    root_fingerprint = out.split("root fingerprint (sha256): ")[1].split()[0]
    org = Org(tmp, config, env, f"https://localhost:{console_port}", data / "pki" / "ca.pem", trust,
              root_fingerprint)
    for name, kind, holder in (("alice", "approver", "Alice"), ("bob", "approver", "Bob"),
                               ("dave", "technician", "Dave"), ("erin", "technician", "Erin"),
                               ("desk", "revoker", "Security desk")):
        certify(org, name, kind, holder)
    revocations(org, "revocations-1.json", hours=1)
    display: XvfbHandle = start_xvfb(640, 480)
    try:
        with spawn("server", "--config", str(config), log=tmp / "server.log", env=env) as server:
            wait_for_port(console_port, server)
            admin_args = ["--config", str(config)]
            helpline("admin", "group", "create", "lab", *admin_args, env=env)
            for user, role, groups in (("admin", "admin", ()), ("alice", "admin", ()), ("bob", "admin", ()),
                                       ("dave", "technician", ("lab",)), ("erin", "technician", ("lab",))):
                extra = [a for g in groups for a in ("--group", g)]
                helpline("admin", "user", "create", user, "--role", role, "--generate-password", *extra, *admin_args,
                         env=env)
                token = helpline("admin", "user", "token", user, *admin_args, env=env).stdout.strip().splitlines()[-1]
                org.tokens[user] = token
            org.cli("trust", "publish", *org.server_args(), str(trust / "root.json"),
                    *map(str, sorted((trust / "certs").glob("*.json"))),
                    str(tmp / "workstation" / "revocations-1.json"), user="admin")
            words = helpline("admin", "token", "create", "--group", "lab", *admin_args, env=env).stdout.split()
            org.agent_state = tmp / "agent"
            helpline("agent", "enroll", words[3], words[4], "--ca-sha256", words[6], "--root-sha256",
                     root_fingerprint, "--state", str(org.agent_state))
            org.device_id = json.loads((org.agent_state / "agent.json").read_text())["device_id"]
            agent_env = {"HELPLINE_UNATTENDED_PROOF_TIMEOUT_S": str(PROOF_TIMEOUT_S), "HELPLINE_LOGGED_IN_USERS": "",
                         "DISPLAY": display.display, "HELPLINE_DISPLAY": display.display}
            with spawn("agent", "run", "--state", str(org.agent_state), log=tmp / "agent.log", env=agent_env):
                org.wait_reported(lambda r: r["reported"] and r["unattended_ok"], "the device takes the authority")
                draft(org, "grant-team", technician_names=["Dave", "Erin"])
                for approver in ("alice", "bob"):
                    org.cli("approve", "sign", "grant-team", *org.server_args(), *org.signer(approver), "--yes",
                            user=approver)
                org.wait_reported(lambda r: "grant-team" in r["accepted"], "the device holds grant-team")
                yield org
    finally:
        display.stop()


def _join_in_background(org: Org, session_id: str, user: str) -> tuple[threading.Thread, list[tuple[int, Any]]]:
    """``POST …/join`` waits for the device's answer: run it beside the proof."""
    result: list[tuple[int, Any]] = []
    thread = threading.Thread(target=lambda: result.append(
        org.call("POST", f"/api/v1/sessions/{session_id}/join", user, {"reason": "second pair of eyes"})))
    thread.start()
    return thread, result


def _challenge_open(org: Org, session_id: str, user: str) -> None:
    def open_() -> bool:
        _status, body = org.call("GET", f"/api/v1/sessions/{session_id}", user)
        return bool(body.get("challenge"))

    wait_for(open_, timeout=20, what="the device's challenge for the joiner")


def test_a_joiner_the_grant_names_proves_who_they_are(org: Org) -> None:
    """Erin is invited into Dave's unattended session; the device challenges her, her signature verifies against
    the grant (which names her), she is admitted view only and watches; the device audit names her as verified.
    Without a proof a joiner is refused when the device's proof timeout ends; the session goes on."""
    session_id = org.request_session("dave", "grant-team")
    out = org.cli("approve", "prove", *org.server_args(), "--session", session_id, *org.signer("dave"), "--yes",
                  user="dave")
    assert "accepted" in out, out
    wait_for(lambda: org.call("GET", f"/api/v1/sessions/{session_id}", "dave")[1]["state"] == "streaming",
             timeout=20, what="the session streams")

    # Without a proof: invited, joins, never signs — refused by the device when its proof timeout ends.
    assert org.call("POST", f"/api/v1/sessions/{session_id}/invite", "dave", {"technician": "erin"})[0] == 200
    started = time.monotonic()
    status, body = org.call("POST", f"/api/v1/sessions/{session_id}/join", "erin", {})
    assert status == 403 and body["error"]["code"] == "join_refused", body
    assert "proof" in body["error"]["message"] and time.monotonic() - started >= PROOF_TIMEOUT_S - 1

    # With her proof: admitted.
    assert org.call("POST", f"/api/v1/sessions/{session_id}/invite", "dave", {"technician": "erin"})[0] == 200
    thread, result = _join_in_background(org, session_id, "erin")
    _challenge_open(org, session_id, "erin")
    org.cli("approve", "prove", *org.server_args(), "--session", session_id, *org.signer("erin"), "--yes",
            user="erin")
    thread.join(timeout=30)
    status, body = result[0]
    assert status == 200 and body["admitted"] and body["viewers"] == ["dave", "erin"], body
    assert body["controller"] == "dave"

    async def watch() -> None:
        url = f"wss://localhost:{org.console.rsplit(':', 1)[1]}/api/v1/sessions/{session_id}/stream"
        headers = {"Origin": org.console, "Authorization": f"Bearer {org.tokens['erin']}"}
        async with Viewer(url, ssl_context=org.context(), headers=headers) as viewer:
            await viewer.wait_for_updates(1, 20)

    asyncio.run(watch())
    joins = [e for e in org.device_audit() if e["event"] == "session.join" and e["session_id"] == session_id]
    assert [j["accepted"] for j in joins] == [False, True], joins
    assert joins[1]["verified_technician"] == "Erin" and joins[1]["by"] == "grant"
    org.call("POST", f"/api/v1/sessions/{session_id}/end", "dave")
