"""Attended sessions end to end: real TLS, real Xvfb, the real Tk prompt clicked with xdotool."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.consent.tk_app import ALLOW_BG, DENY_BG, END_BG, INDICATOR_TITLE, PROMPT_TITLE
from agent.runtime import Agent
from agent.sessions import USERS_ENV, logged_in_users
from server.sessions import SESSIONS
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import (
    api,
    audit_actions,
    click_colour,
    configure_agent,
    find_colour,
    install_test_auth,
    paint_root,
    viewer_for,
    wait_for_audit,
    wait_window,
    write_policy,
    xdotool,
)
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


def _config(tmp_path: Path, **policy: object) -> AgentConfig:
    policy_file = write_policy(tmp_path / "policy.toml", **policy) if policy else None
    return AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0, policy_file=policy_file)


async def _request(server, device_id: str, mode: str, user: str = "ann") -> str:  # type: ignore[no-untyped-def]
    status, body = await api(server, "POST", f"/api/v1/devices/{device_id}/sessions", user,
                             {"mode": mode, "reason": "printer setup"})
    assert status == 201, body
    assert body["state"] == "offered"
    return str(body["session_id"])


async def test_denied_consent_sends_no_screen_byte(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """The user clicks Deny: the session ends as denied and not one byte crosses the tunnel or reaches the viewer."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        async with running_agent(state, _config(tmp_path), setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _request(server, state.device_id, "control")
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, DENY_BG)
                await asyncio.wait_for(viewer.closed.wait(), 10)
            assert viewer.stats.bytes_received == 0 and viewer.stats.updates == 0
            assert agent.sessions.tunnel_bytes.get(sid, 0) == 0
            status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
            assert status == 200 and body["state"] == "ended" and body["answered_by"] == "user"
            assert body["bytes_to_technician"] == 0 and body["started_at"] is None
            actions = await audit_actions(server, state.device_id)
            assert [
                a for a in actions if a.startswith("session.")] == ["session.requested", "session.offered", "session.denied", "session.ended"]


async def test_unanswered_prompt_times_out_to_deny(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Nobody answers within the policy's 2 s: Deny by timeout, prompt gone, no screen byte sent."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = _config(tmp_path, prompt_timeout_s=2)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _request(server, state.device_id, "view")
            async with viewer_for(server, sid) as viewer:
                await wait_window(xvfb.display, PROMPT_TITLE)
                started = time.monotonic()
                await asyncio.wait_for(viewer.closed.wait(), 10)
                assert time.monotonic() - started < 4.0
            await wait_window(xvfb.display, PROMPT_TITLE, present=False)
            assert viewer.stats.bytes_received == 0
            assert agent.sessions.tunnel_bytes.get(sid, 0) == 0
            _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
            assert body["answered_by"] == "timeout" and body["end_reason"] == "no answer to the consent prompt"
            await wait_for_audit(server, "session.timed_out")


async def test_view_only_session_refuses_input_and_audits_it(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Allow on a view request: the screen streams, but a click from the viewer is refused, not injected, and audited."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        async with running_agent(state, _config(tmp_path), setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _request(server, state.device_id, "view")
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for_updates(1, 15)
                before = xdotool(xvfb.display, "getmouselocation")
                await viewer.click(7, 9)
                await viewer.wait_for(lambda v: any(e.code == "view_only" for e in v.stats.errors), 10)
                assert xdotool(xvfb.display, "getmouselocation") == before
            await wait_for_audit(server, "session.input_refused")
            await wait_until(lambda: sid not in server.console_app[SESSIONS].live, what="session ended")
            _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
            assert body["mode"] == "view" and body["bytes_to_technician"] > 0
            assert body["end_reason"] == "technician disconnected"
            await wait_until(lambda: not agent.sessions.running, what="agent side ended")


async def test_end_session_on_indicator_closes_tunnel_within_a_second(tmp_path: Path,
                                                                       xvfb: XvfbHandle) -> None:  # noqa: F811
    """Clicking End session on the always-on-top indicator closes the technician's stream in under 1 s."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        async with running_agent(state, _config(tmp_path), setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _request(server, state.device_id, "control")
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for_updates(1, 15)
                await wait_window(xvfb.display, INDICATOR_TITLE)
                clicked = await click_colour(xvfb.display, END_BG)
                await asyncio.wait_for(viewer.closed.wait(), 5)
                elapsed = time.monotonic() - clicked
            assert elapsed < 1.0, f"tunnel closed {elapsed:.2f}s after End session"
            await wait_window(xvfb.display, INDICATOR_TITLE, present=False)
            await wait_until(lambda: sid not in server.console_app[SESSIONS].live, what="session ended")
            _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
            assert body["end_reason"] == "device user ended the session" and body["ended_by"] == "user"
            actions = await audit_actions(server, state.device_id)
            assert "session.control_enabled" in actions and "session.started" in actions
            print(f"End session → tunnel closed in {elapsed * 1000:.0f} ms")


async def test_local_policy_forbidding_control_wins(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """The server asks for control; the device policy forbids it: the user is asked for view only and input is refused."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = _config(tmp_path, allow_control=False)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _request(server, state.device_id, "control")
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for_updates(1, 15)
                _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
                assert body["requested_mode"] == "control" and body["mode"] == "view"
                await viewer.press_key("KeyA")
                await viewer.wait_for(lambda v: any(e.code == "view_only" for e in v.stats.errors), 10)
                status, _ = await api(server, "POST", f"/api/v1/sessions/{sid}/mode", "ann", {"mode": "control"})
                assert status == 202
                await wait_for_audit(server, "session.mode_refused")
            actions = await audit_actions(server, state.device_id)
            assert "session.control_enabled" not in actions


def _only_users(users: list[str]) -> Callable[[Agent], None]:
    """A setup hook that leaves the display to AgentConfig/$DISPLAY and fakes only the logged-in users."""

    def setup(agent: Agent) -> None:
        agent.sessions.logged_in = lambda: list(users)

    return setup


async def _denied_with(server, device_id: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    status, body = await api(server, "POST", f"/api/v1/devices/{device_id}/sessions", "ann", {"mode": "view"})
    assert status == 201, body  # offered; the answer may already be in
    sid = body["session_id"]
    await wait_until(lambda: sid not in server.console_app[SESSIONS].live, what="session refused")
    _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
    assert body["state"] == "ended" and body["answered_by"] == "unavailable" and body["started_at"] is None
    return dict(body)


async def test_nobody_logged_in_denies_attended_sessions(tmp_path: Path, xvfb: XvfbHandle,  # noqa: F811
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A display (from AgentConfig.display, $DISPLAY unset) but no logged-in user: denied with that reason,
    no prompt shown."""
    monkeypatch.delenv("DISPLAY", raising=False)
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0, display=xvfb.display)
        async with running_agent(state, config, setup=_only_users([])) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            assert agent.sessions.display == xvfb.display
            body = await _denied_with(server, state.device_id)
            assert body["end_reason"] == "nobody is logged in to ask for consent"
            assert find_colour(xvfb.display, ALLOW_BG) is None
            await wait_for_audit(server, "session.denied")


async def test_no_display_denies_attended_sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No display configured and no $DISPLAY: attended sessions are denied with that reason."""
    monkeypatch.delenv("DISPLAY", raising=False)
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        async with running_agent(state, _config(tmp_path), setup=_only_users(["tester"])) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            assert agent.sessions.display is None
            body = await _denied_with(server, state.device_id)
            assert body["end_reason"] == "no display to show the consent prompt on"


def test_logged_in_users_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """HELPLINE_LOGGED_IN_USERS replaces utmp: a list of names, or empty for nobody."""
    monkeypatch.setenv(USERS_ENV, " alice, bob ,")
    assert logged_in_users() == ["alice", "bob"]
    monkeypatch.setenv(USERS_ENV, "")
    assert logged_in_users() == []


async def test_idle_session_ends_but_input_and_screen_changes_keep_it(tmp_path: Path,
                                                                      xvfb: XvfbHandle) -> None:  # noqa: F811
    """With a 1.5 s idle timeout, technician input and a changing screen keep the session alive; the ticking
    indicator alone does not, and the session ends as idle (server-ended, audited, seen by the agent)."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        server.console_app[SESSIONS].settings.idle_timeout_s = 1.5
        state = await enroll_agent(server, tmp_path / "agent")
        async with running_agent(state, _config(tmp_path), setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _request(server, state.device_id, "view")
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for_updates(1, 15)
                await wait_window(xvfb.display, INDICATOR_TITLE)
                for step in range(8):  # 2 s of technician input (refused on a view session, still activity)
                    await viewer.send_mouse(10 + step, 10)
                    await asyncio.sleep(0.25)
                assert not viewer.closed.is_set()
                for step in range(8):  # 2 s of big screen changes on the device
                    await asyncio.to_thread(paint_root, xvfb.display, ("#204080", "#802040")[step % 2])
                    await asyncio.sleep(0.25)
                assert not viewer.closed.is_set()
                quiet = time.monotonic()
                await asyncio.wait_for(viewer.closed.wait(), 6)
                idle_for = time.monotonic() - quiet
            assert 1.0 <= idle_for < 4.0, idle_for
            await wait_until(lambda: sid not in agent.sessions.running, what="agent side ended")
            assert agent.sessions.finished[sid] == "idle timeout"
            _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
            assert body["end_reason"] == "idle timeout" and body["ended_by"] == "server"
            record = await wait_for_audit(server, "session.ended")
            assert "idle timeout" in str(record["details"])
            await wait_window(xvfb.display, INDICATOR_TITLE, present=False)


TARGET_TITLE = "Helpline test target"
TARGET_BG = "#2060c0"
_TARGET_APP = """
import sys, tkinter as tk
root = tk.Tk(); root.title(sys.argv[2]); root.geometry("220x140+60+520")
def clicked():
    open(sys.argv[1], "w").write("clicked")
tk.Button(root, text="target", bg=sys.argv[3], activebackground=sys.argv[3], command=clicked,
          relief="flat", bd=0, highlightthickness=0).pack(fill="both", expand=True)
root.mainloop()
"""


@pytest.fixture
def tk_target(xvfb: XvfbHandle, tmp_path: Path) -> Iterator[Path]:  # noqa: F811
    """A Tk window with one big button on the Xvfb display; the returned file appears when it is clicked."""
    marker = tmp_path / "target-clicked"
    proc = subprocess.Popen([sys.executable, "-c", _TARGET_APP, str(marker), TARGET_TITLE, TARGET_BG],
                            env=xvfb.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield marker
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _pointer(display: str) -> tuple[int, int]:
    fields = dict(part.split(":") for part in xdotool(display, "getmouselocation").split())
    return int(fields["x"]), int(fields["y"])


async def test_view_to_control_upgrade_asks_the_user_again(tmp_path: Path, xvfb: XvfbHandle,  # noqa: F811
                                                           tk_target: Path) -> None:
    """Upgrading a view session: the Tk prompt asks again; Deny keeps it view-only (input refused), Allow lets
    the technician's pointer move and click a Tk button; session.control_enabled names the consenting user.
    (No cooldown after the Deny here: tests/test_consent_cooldown.py covers it.)"""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = _config(tmp_path, decline_cooldown_s=0)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            await wait_window(xvfb.display, TARGET_TITLE)
            sid = await _request(server, state.device_id, "view")
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for_updates(1, 15)
                target = find_colour(xvfb.display, TARGET_BG)
                assert target is not None
                path = f"/api/v1/sessions/{sid}/mode"
                # 1. Deny: still view-only.
                status, body = await api(server, "POST", path, "ann", {"mode": "control"})
                assert status == 202 and body["pending_mode"] == "control" and body["mode"] == "view"
                await wait_window(xvfb.display, PROMPT_TITLE)
                await click_colour(xvfb.display, DENY_BG)
                await wait_for_audit(server, "session.mode_refused")
                _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
                assert body["mode"] == "view" and body["pending_mode"] is None
                before = _pointer(xvfb.display)
                await viewer.click(*target)
                await viewer.wait_for(lambda v: any(e.code == "view_only" for e in v.stats.errors), 10)
                assert _pointer(xvfb.display) == before and not tk_target.exists()
                # 2. Allow: control reaches the Tk button.
                status, _body = await api(server, "POST", path, "ann", {"mode": "control"})
                assert status == 202
                await wait_window(xvfb.display, PROMPT_TITLE)
                await click_colour(xvfb.display, ALLOW_BG)
                record = await wait_for_audit(server, "session.control_enabled")
                assert "device user" in str(record["details"]) and record["actor"] == f"device:{state.device_id}"
                _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
                assert body["mode"] == "control" and body["pending_mode"] is None
                await viewer.send_mouse(target[0] - 30, target[1] - 20)
                await wait_until(lambda: _pointer(xvfb.display) == (target[0] - 30, target[1] - 20),
                                 what="pointer moved by the technician")
                await viewer.click(*target)
                await wait_until(tk_target.exists, what="Tk button clicked by the technician")
            actions = await audit_actions(server, state.device_id)
            assert actions.count("session.mode_requested") == 2
