"""The remote shell end to end through the relay: real server, real agent on Xvfb, the real Tk prompt, a real pty.

The reference viewer (agent.shell.client.ShellViewer) types; the browser console has its own test
(test_shell_console.py). Covered here: the shell runs as ``[agent] session_user``, its output reaches the
viewer and an asciicast v2 recording (0600) that holds no keystroke; start/end are audited with user and exit
status; refusals: the local policy switch off, a root shell without allow_root_shell, a view-only session of a
viewer-role account (the relay answers), and a technician without the session.
"""

from __future__ import annotations

import asyncio
import json
import pwd
import stat
from pathlib import Path
from typing import Any

import aiohttp

from agent.config import AgentConfig
from agent.consent.tk_app import ALLOW_BG
from agent.shell.client import ShellViewer
from certs import tls
from protocol import shell as sh
from server.sessions import SESSIONS
from tests.harness import console_url, enroll_agent, running_agent, running_server, wait_until
from tests.sealed_files import plain
from tests.test_session_helpers import (
    api,
    click_colour,
    configure_agent,
    install_test_auth,
    wait_for_audit,
    write_policy,
    xdotool,
)
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

USER = "nobody"


def shell_viewer(server: Any, session_id: str, user: str = "ann") -> ShellViewer:
    url = f"wss://localhost:{server.console_port}/api/v1/sessions/{session_id}/stream"
    ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
    return ShellViewer(url, ssl_context=ctx, headers={"Origin": console_url(server), "X-Test-User": user})


def _details(row: dict[str, Any]) -> dict[str, Any]:
    details = row["details"]
    return json.loads(details) if isinstance(details, str) else dict(details)


def _replay(cast: Path) -> str:
    """The output a player would show: every "o" event of the recording in order."""
    if not cast.exists():
        return ""
    lines = plain(cast).decode().splitlines()[1:]
    return "".join(e[2] for e in map(json.loads, lines) if e[1] == "o")


async def _session(server: Any, device_id: str, mode: str, user: str = "ann") -> str:
    status, body = await api(server, "POST", f"/api/v1/devices/{device_id}/sessions", user,
                             {"mode": mode, "reason": "shell test"})
    assert status == 201, body
    return str(body["session_id"])


async def test_shell_through_the_relay_recorded_and_audited(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Output reaches the viewer; id -u is session_user's uid, tty a pty; the .cast replays it without the typed
    secret; start and end (status 7) are audited; a root shell is refused by the default policy."""
    policy = write_policy(tmp_path / "policy.toml", allow_shell=True)
    uid = pwd.getpwnam(USER).pw_uid
    async with running_server(tmp_path / "srv", session_recording=True) as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0, policy_file=policy)
        async with running_agent(state, config, setup=configure_agent(xvfb.display, shell_user=USER)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _session(server, state.device_id, "control")
            async with shell_viewer(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG, timeout=20)
                await viewer.wait_for(lambda v: v.caps is not None, 30)
                assert viewer.caps is not None and "shell" in viewer.caps.allowed
                await viewer.shell_send(sh.Open(cols=90, rows=25, root=True))
                await viewer.until(lambda: bool(viewer.of(sh.Error)), what="root refusal")
                refusal = viewer.of(sh.Error)[0]
                assert isinstance(refusal, sh.Error) and refusal.code == "root_refused"

                await viewer.shell_send(sh.Open(cols=90, rows=25))
                await viewer.until(lambda: bool(viewer.of(sh.Opened)), what="shell.opened")
                opened = viewer.of(sh.Opened)[0]
                assert isinstance(opened, sh.Opened) and opened.uid == uid and opened.tty.startswith("/dev/pts/")
                await viewer.keys("echo ID=$(id -u) TTY=$(tty)\r")
                await viewer.until(lambda: f"ID={uid} TTY={opened.tty}".encode() in viewer.output, what="id/tty")
                # Typed with echo off: the secret never comes back as output, so no recording may hold it.
                await viewer.keys("stty -echo; echo NO-ECHO; read -r secret; stty echo; echo LEN=${#secret}\r")
                # "NO-ECHO\r\n" only as the command's output (the typed line echoes "NO-ECHO; read"); not after a
                # newline: keys typed before the last command's prompt echo first, so the prompt may precede it.
                await viewer.until(lambda: b"NO-ECHO\r\n" in viewer.output, what="echo switched off")
                await viewer.keys("hunter2-typed\r")
                await viewer.until(lambda: b"LEN=13" in viewer.output, what="the read line")
                await viewer.keys("exit 7\r")
                await viewer.until(lambda: bool(viewer.of(sh.Exit)), what="shell.exit")
                ended = viewer.of(sh.Exit)[0]
                assert isinstance(ended, sh.Exit) and ended.status == 7
                live = bytes(viewer.output)
            started = _details(await wait_for_audit(server, "session.shell_started"))
            assert started["uid"] == uid and started["user"] == USER
            assert _details(await wait_for_audit(server, "session.shell_ended"))["status"] == 7
            assert _details(await wait_for_audit(server, "session.shell_refused"))["code"] == "root_refused"
            recordings = server.console_app[SESSIONS].settings.recordings_dir
            cast = recordings / f"{sid}.cast"
            status, body = await api(server, "POST", f"/api/v1/sessions/{sid}/end", "ann", {})
            assert status == 200, body
            await wait_for_audit(server, "session.ended")
            await wait_until(lambda: _replay(cast) == live.decode(), timeout=20, what="the whole .cast written")
            assert stat.S_IMODE(cast.stat().st_mode) == 0o600
            lines = plain(cast, partial=False).decode().splitlines()
            header = json.loads(lines[0])
            assert (header["version"], header["width"], header["height"]) == (2, 90, 25)
            events = [json.loads(line) for line in lines[1:]]
            assert {e[1] for e in events} <= {"o", "r"}  # output and resizes only: never "i" (input)
            assert "hunter2" not in "\n".join(lines)
            hlrec = recordings / f"{sid}.hlrec"
            assert b"hunter2" not in plain(hlrec) and f"ID={uid}".encode() not in plain(hlrec)
            ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{console_url(server)}/api/v1/sessions/{sid}/shell-recording", ssl=ctx,
                                    headers={"X-Test-User": "ann"}) as resp:
                    assert resp.status == 200 and (await resp.text()) == "\n".join(lines) + "\n"
                async with http.get(f"{console_url(server)}/api/v1/sessions/{sid}/shell-recording", ssl=ctx,
                                    headers={"X-Test-User": "vic"}) as resp:
                    assert resp.status == 403  # remote_view, not the session's technician, no view_recordings
            await wait_for_audit(server, "session.shell_recording.view")


async def test_shell_refused_without_consent_and_on_view_only(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Policy without allow_shell: shell_refused, nothing runs; a viewer-role account's view-only session: the
    relay answers view_only and drops its keystrokes."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0)  # default policy: no shell
        async with running_agent(state, config, setup=configure_agent(xvfb.display, shell_user=USER)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _session(server, state.device_id, "control")
            async with shell_viewer(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG, timeout=20)
                await viewer.wait_for(lambda v: v.caps is not None, 30)
                assert viewer.caps is not None and "shell" not in viewer.caps.allowed
                await viewer.shell_send(sh.Open())
                await viewer.until(lambda: bool(viewer.of(sh.Error)), what="refusal")
                error = viewer.of(sh.Error)[0]
                assert isinstance(error, sh.Error) and error.code == "shell_refused" and "policy" in error.message
                assert not viewer.of(sh.Opened)
            await api(server, "POST", f"/api/v1/sessions/{sid}/end", "ann", {})
            await wait_for_audit(server, "session.ended")

            await asyncio.to_thread(xdotool, xvfb.display, "mousemove", "1", "1")  # away from Allow: --sync moves
            sid = await _session(server, state.device_id, "view", user="vic")
            async with shell_viewer(server, sid, user="vic") as viewer:
                await click_colour(xvfb.display, ALLOW_BG, timeout=20)
                await viewer.wait_for(lambda v: v.caps is not None, 30)
                await viewer.shell_send(sh.Open())
                await viewer.keys("touch /tmp/should-not-exist\r")
                await viewer.until(lambda: bool(viewer.of(sh.Error)), what="view-only refusal")
                error = viewer.of(sh.Error)[0]
                assert isinstance(error, sh.Error) and error.code == "view_only"
            refused = _details(await wait_for_audit(server, "session.shell_refused"))
            assert refused["code"] == "view_only" and refused["by"] == "server"
            status, _ = await api(server, "GET", f"/api/v1/sessions/{sid}", "bob")
            assert status in (403, 404)  # a technician of another group never reaches the session (nor its shell)
