"""The remote shell's idle timeout: the server's (``shell_idle_timeout_s``, enforced by the relay) and the device
policy's (``shell_idle_timeout_s``, enforced by the agent) — the shorter hangs an idle shell up, and it is audited.

The end-to-end test runs a real server and an in-process agent on Xvfb with a scripted consent, a real pty
(``sh`` as ``nobody``) and the reference shell viewer; the unit tests drive the relay's
:class:`server.sessions.shell_relay.ShellWatch` and the policy parser directly.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.consent.scripted import ScriptedConsentUI
from agent.policy import LocalPolicy, PolicyError
from agent.toolkit.caps import decide_caps
from protocol import shell as sh
from server.sessions import SESSIONS
from server.sessions.shell_relay import ShellWatch
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import (
    api,
    audit_actions,
    configure_agent,
    install_test_auth,
    wait_for_audit,
    write_policy,
)
from tests.test_shell_e2e import shell_viewer
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

USER = "nobody"


def _details(row: dict[str, Any]) -> dict[str, Any]:
    details = row["details"]
    return json.loads(details) if isinstance(details, str) else dict(details)


async def _idle_shell(server: Any, device_id: str) -> tuple[sh.Exit, float]:
    """Open a shell, run one command, then leave it alone: its shell.exit and the seconds of silence before it."""
    status, body = await api(server, "POST", f"/api/v1/devices/{device_id}/sessions", "ann",
                             {"mode": "control", "reason": "idle test"})
    assert status == 201, body
    sid = str(body["session_id"])
    async with shell_viewer(server, sid) as viewer:
        await viewer.wait_for(lambda v: v.caps is not None, 30)
        await viewer.shell_send(sh.Open(cols=80, rows=24))
        await viewer.until(lambda: bool(viewer.of(sh.Opened)), 30, "shell.opened")
        await viewer.keys("echo BUSY-$((20+1))\r")
        await viewer.until(lambda: b"BUSY-21" in viewer.output, 30, "the command's output")
        await viewer.until(lambda: viewer.output.endswith(b"$ "), 30, "the prompt after it")
        quiet_from = time.monotonic()
        await viewer.until(lambda: bool(viewer.of(sh.Exit)), 60, "the idle hang-up")
        silent = time.monotonic() - quiet_from
        exit_ = viewer.of(sh.Exit)[0]
        assert isinstance(exit_, sh.Exit)
        assert viewer.of(sh.Opened) and not viewer.of(sh.Error)
    status, body = await api(server, "POST", f"/api/v1/sessions/{sid}/end", "ann", {})
    assert status == 200, body
    return exit_, silent


async def test_idle_shell_hung_up_by_the_stricter_timeout_and_audited(tmp_path: Path,
                                                                      xvfb: XvfbHandle) -> None:  # noqa: F811
    """Server 2 s, device 900 s: the relay sends shell.close {idle} after 2 s of silence, audits shell_idle (by
    server) and shell_ended says so. Server 60 s, device 2 s: the agent hangs up first with its own reason."""
    policy = write_policy(tmp_path / "policy.toml", allow_shell=True)
    async with running_server(tmp_path / "srv", shell_idle_timeout_s=2.0) as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0, policy_file=policy)
        ui = ScriptedConsentUI([True, True])
        async with running_agent(state, config, setup=configure_agent(xvfb.display, ui, shell_user=USER)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            exit_, silent = await _idle_shell(server, state.device_id)
            assert exit_.reason == "idle timeout (server)", exit_
            assert silent >= 1.5, silent  # not before the 2 s of silence (less the viewer's lag behind the relay)
            idle = _details(await wait_for_audit(server, "session.shell_idle"))
            assert idle == {"session_id": idle["session_id"], "idle_s": 2.0, "by": "server"}
            ended = _details(await wait_for_audit(server, "session.shell_ended"))
            assert ended["reason"] == "idle timeout (server)" and ended["session_id"] == idle["session_id"]
            await wait_until(lambda: not agent.sessions.running, timeout=20, what="the first session ended")

            server.console_app[SESSIONS].settings.shell_idle_timeout_s = 60.0
            write_policy(policy, allow_shell=True, shell_idle_timeout_s=2)
            exit_, silent = await _idle_shell(server, state.device_id)
            assert exit_.reason == "idle timeout", exit_  # the device's own limit, shorter than the server's
            assert 1.5 <= silent < 60, silent

            async def two_ends() -> bool:
                return (await audit_actions(server)).count("session.shell_ended") == 2

            await wait_until(two_ends, timeout=10, what="the second shell_ended record")
            last = _details(await wait_for_audit(server, "session.shell_ended"))
            assert last["reason"] == "idle timeout" and last["session_id"] != idle["session_id"]
            assert (await audit_actions(server)).count("session.shell_idle") == 1  # the relay's timer never fired


async def test_relay_idle_timer_restarts_on_traffic_and_stops_at_exit() -> None:
    """ShellWatch alone: terminal bytes either way keep the shell alive; silence sends shell.close {idle} once
    and audits it; a shell that exits first is left alone."""
    sent: list[str] = []
    events: list[tuple[str, dict[str, object]]] = []
    got = asyncio.Event()

    async def to_agent(text: str) -> None:
        sent.append(text)
        got.set()

    watch = ShellWatch(view_only=lambda: False, cast_path=None, title="t",
                       on_shell=lambda kind, details: events.append((kind, details)), idle_timeout_s=0.5,
                       to_agent=to_agent)
    watch.from_agent(False, sh.encode_text(sh.Opened(user="u", uid=1, tty="/dev/pts/1", pid=5)))
    started = time.monotonic()
    while time.monotonic() - started < 1.0:  # 1 s of traffic, a byte every 0.1 s: never idle
        watch.from_technician(True, sh.pack_data(b"x"))
        watch.from_agent(True, sh.pack_data(b"x"))
        quiet = time.monotonic()
        await asyncio.sleep(0.1)
    assert not sent
    await asyncio.wait_for(got.wait(), 10)
    assert time.monotonic() - quiet >= 0.45
    assert [sh.decode_text(t) for t in sent] == [sh.Close(idle=True)]
    assert ("idle", {"idle_s": 0.5, "by": "server"}) in events
    watch.from_agent(False, sh.encode_text(sh.Exit(status=-1, reason="idle timeout (server)")))

    sent.clear()
    watch.from_agent(False, sh.encode_text(sh.Opened(user="u", uid=1, tty="/dev/pts/1", pid=6)))
    watch.from_agent(False, sh.encode_text(sh.Exit(status=0, reason="the shell exited")))
    await asyncio.sleep(0.8)  # longer than the timeout: nothing may be sent for a shell that is gone
    assert not sent
    watch.close()


def test_policy_shell_idle_key() -> None:
    """shell_idle_timeout_s: 1..86400 seconds, default 900, carried into the session's caps."""
    assert LocalPolicy().shell_idle_timeout_s == 900.0
    policy = LocalPolicy.parse("allow_shell = true\nshell_idle_timeout_s = 120\n")
    assert policy.shell_idle_timeout_s == 120.0 and decide_caps(policy, None).shell_idle_s == 120.0
    for bad in ("0", "90000", "true", '"10"'):
        with pytest.raises(PolicyError, match="shell_idle_timeout_s"):
            LocalPolicy.parse(f"shell_idle_timeout_s = {bad}\n")
