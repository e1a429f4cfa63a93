"""While a Helpline prompt is on the user's screen, the technician's remote input is suspended.

A technician in control could otherwise click *Allow* on a prompt meant for the device user:
on a second session's consent prompt, or on the prompt for a mode change. Real server, agent,
Xvfb and Tk prompt; the technician's click is aimed at the Allow button through the stream.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.config import AgentConfig
from agent.consent.guard import PromptGuard
from agent.consent.tk_app import ALLOW_BG, DENY_BG, PROMPT_TITLE
from agent.viewer import Viewer
from server.sessions import SESSIONS
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import (
    api,
    click_colour,
    configure_agent,
    find_colour,
    install_test_auth,
    viewer_for,
    wait_window,
    xdotool,
)
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


def test_prompt_guard_counts_nested_prompts_and_tells_listeners_once() -> None:
    """Suspended while any prompt shows (two at once included); listeners hear when the first appears."""
    guard = PromptGuard()
    heard: list[str] = []
    unsubscribe = guard.subscribe(lambda: heard.append("shown"))
    assert not guard.suspended()
    with guard.showing():
        assert guard.suspended()
        with guard.showing():
            assert guard.suspended()
        assert guard.suspended()
    assert not guard.suspended() and heard == ["shown"]
    unsubscribe()
    with guard.showing():
        pass
    assert heard == ["shown"]


async def _request(server, device_id: str, mode: str) -> str:  # type: ignore[no-untyped-def]
    status, body = await api(server, "POST", f"/api/v1/devices/{device_id}/sessions", "ann",
                             {"mode": mode, "reason": "printer setup"})
    assert status == 201, body
    return str(body["session_id"])


def _pointer(display: str) -> tuple[int, int]:
    fields = dict(part.split(":") for part in xdotool(display, "getmouselocation").split())
    return int(fields["x"]), int(fields["y"])


def _suspended(viewer: Viewer) -> int:
    return sum(e.code == "input_suspended" for e in viewer.stats.errors)


async def _click_allow_through_the_stream(display: str, viewer: Viewer) -> None:
    """The technician aims a click at the prompt's Allow button; each event must come back refused."""
    await wait_window(display, PROMPT_TITLE)
    spot = None

    async def allow_visible() -> bool:
        nonlocal spot
        spot = await asyncio.to_thread(find_colour, display, ALLOW_BG)
        return spot is not None

    await wait_until(allow_visible, what="the Allow button on screen")
    assert spot is not None
    before = _suspended(viewer)
    await viewer.click(*spot)
    # Three events (move, down, up), each answered with input_suspended once it was refused.
    await viewer.wait_for(lambda v: _suspended(v) >= before + 3, 10)
    await wait_window(display, PROMPT_TITLE)  # still there: nobody answered it
    assert find_colour(display, ALLOW_BG) == spot


async def test_mode_change_prompt_suspends_the_technicians_input(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """During the prompt to upgrade a view session to control, a click aimed at Allow through the stream is
    refused as suspended (not merely view-only), the prompt stays unanswered, and the refusals are counted."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _request(server, state.device_id, "view")
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for_updates(1, 15)
                status, _ = await api(server, "POST", f"/api/v1/sessions/{sid}/mode", "ann", {"mode": "control"})
                assert status == 202
                await _click_allow_through_the_stream(xvfb.display, viewer)
                _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
                assert body["mode"] == "view" and body["pending_mode"] == "control"
                await click_colour(xvfb.display, DENY_BG)  # the user answers
                await wait_window(xvfb.display, PROMPT_TITLE, present=False)
            await wait_until(lambda: sid not in server.console_app[SESSIONS].live, what="session ended")

            async def counted() -> bool:
                _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
                return int(body["refused_inputs"]) >= 3

            await wait_until(counted, what="refused inputs recorded")


async def test_second_sessions_prompt_cannot_be_allowed_by_a_technician_in_control(
        tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """A technician controls the screen and asks for a second session: its consent prompt appears, the click
    aimed at its Allow button through the first session's stream is refused, the second session stays offered;
    once the user has answered, the technician's input is injected again."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=tmp_path / "agent", backoff_cap_s=1.0)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            first = await _request(server, state.device_id, "control")
            async with viewer_for(server, first) as viewer:
                await click_colour(xvfb.display, ALLOW_BG)
                await viewer.wait_for_updates(1, 15)
                await wait_window(xvfb.display, PROMPT_TITLE, present=False)
                second = await _request(server, state.device_id, "control")
                await _click_allow_through_the_stream(xvfb.display, viewer)
                _status, body = await api(server, "GET", f"/api/v1/sessions/{second}", "ann")
                assert body["state"] == "offered"
                await click_colour(xvfb.display, DENY_BG)  # the user answers
                await wait_window(xvfb.display, PROMPT_TITLE, present=False)

                async def denied() -> bool:
                    _status, body = await api(server, "GET", f"/api/v1/sessions/{second}", "ann")
                    return body["state"] == "ended" and body["answered_by"] == "user"

                await wait_until(denied, what="the second session denied by the user")
                # The prompt is gone: the technician's input reaches the screen again.
                await viewer.send_mouse(31, 37)
                await wait_until(lambda: _pointer(xvfb.display) == (31, 37), what="pointer moved by the technician")
                assert agent.sessions.running[first].mode == "control"
