"""Consent on a Wayland desktop without XWayland: the native (zenity) prompt and indicator, on a real GNOME.

tests/wayland.py's headless Mutter is started with ``--no-x11``: no X server at all, so the Tk
windows cannot appear and agent.consent.select must pick the zenity windows. The test plays the
person: it finds the windows on an independent ScreenCast of the monitor (GTK's Adwaita buttons,
by their exact border colour) and clicks them through Mutter's own RemoteDesktop API, as
tests/test_wayland_portal.py clicks GNOME's chooser. A real server and agent run the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.consent.guard import PromptGuard
from agent.consent.select import WaylandConsentUI, consent_ui
from agent.consent.ui import IndicatorInfo, PromptRequest
from agent.consent.zenity import COLLEAGUES_ALLOW, ZenityConsentUI, markup, prompt_args
from agent.screen.capture import Frame
from agent.screen.wayland.frames import PipeWireCapture
from agent.screen.wayland.mutter import MutterSession
from agent.toolkit.tunnel import UNSEEN_REASON
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_screen_support import poll_until
from tests.test_session_helpers import api, configure_agent, install_test_auth, viewer_for
from tests.test_wayland import colour_box
from tests.test_wayland_portal import BTN_LEFT, onlooker
from tests.wayland import MutterHandle, adopted_mutter
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

TIMEOUT = 30.0
#: GTK 3 Adwaita's button border (#cdc7c2): the sides of Allow, Deny and End session on the cast.
BUTTON_BORDER = (0xCD, 0xC7, 0xC2)
#: Adwaita's dialog background: the prompt's body on the cast.
DIALOG_BG = "#f6f5f4"


@pytest.fixture
def native(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MutterHandle]:
    """Headless Mutter without XWayland, whose session this process (the agent under test) adopts."""
    with adopted_mutter(tmp_path, monkeypatch, 1280, 800, xwayland=False) as handle:
        yield handle


def buttons(frame: Frame) -> list[tuple[int, int, int]]:
    """Centre and width of the GTK buttons on screen, left to right: pairs of vertical border runs of one height."""
    r, g, b = BUTTON_BORDER
    mask = (frame[:, :, 2] == r) & (frame[:, :, 1] == g) & (frame[:, :, 0] == b)
    sides: list[tuple[int, int, int]] = []
    for column in np.nonzero(mask.sum(axis=0) >= 15)[0]:
        ys = np.nonzero(mask[:, column])[0]
        runs = np.split(ys, np.nonzero(np.diff(ys) != 1)[0] + 1)  # a column may cross a list's frame too
        for run in runs:
            if len(run) >= 15:
                sides.append((int(column), int(run[0]), int(run[-1])))
    rows: dict[tuple[int, int], list[int]] = {}  # a button's two sides span the same rows (a list's frame others)
    for side, top, bottom in sides:
        rows.setdefault((top, bottom), []).append(side)
    found = []
    for (top, bottom), xs in rows.items():
        while len(xs) >= 2:
            if 30 <= xs[1] - xs[0] <= 300:
                found.append(((xs[0] + xs[1]) // 2, (top + bottom) // 2, xs[1] - xs[0]))
                xs = xs[2:]
            else:
                xs = xs[1:]
    return sorted(found)


async def wait_buttons(capture: PipeWireCapture, count: int) -> list[tuple[int, int, int]]:
    """The buttons once exactly ``count`` are on screen (3: "Allow, and colleagues may join", Deny, Allow;
    2: Deny, Allow; 1: End session)."""
    found: list[tuple[int, int, int]] = []

    def shown() -> bool:
        nonlocal found
        found = buttons(capture.grab(1)) if capture.frames else []
        return len(found) == count

    try:
        await poll_until(shown, TIMEOUT, interval=0.2)
    except TimeoutError:
        if capture.frames:  # for the failure's diagnosis: what was on screen instead
            np.save(Path(os.environ["XDG_RUNTIME_DIR"]).parent / "helpline-no-buttons.npy", capture.grab(1))
        raise AssertionError(f"not {count} buttons on screen: {found}") from None
    return found


async def click(hands: MutterSession, at: tuple[int, int, int], done: asyncio.Event | None = None,
                check: object = None) -> float:
    """Click at ``at`` until ``done`` is set / ``check()`` holds (a fresh RemoteDesktop session drops its first
    events); returns the monotonic time of the release of the click that worked."""
    assert done is not None or callable(check)
    async with asyncio.timeout(TIMEOUT):
        nudge = 0
        while True:
            await hands.pointer_motion(at[0] + nudge, at[1])
            await asyncio.sleep(0.2)  # pacing between a person's move and press, not synchronization
            await hands.pointer_button(BTN_LEFT, True)
            await asyncio.sleep(0.1)  # a press held as long as a finger does
            await hands.pointer_button(BTN_LEFT, False)
            released = time.monotonic()
            with contextlib.suppress(TimeoutError):
                if done is not None:
                    await asyncio.wait_for(done.wait(), 3.0)
                else:
                    assert callable(check)
                    await poll_until(check, 3.0, interval=0.05)
                return released
            nudge = (nudge + 1) % 3


def dialog(frame: Frame) -> Frame:
    """The prompt's body (Adwaita's dialog background box) cut out of the cast."""
    box = colour_box(frame, DIALOG_BG)
    assert box is not None, "no dialog on screen"
    x, y, w, h = box
    return frame[y: y + h, x: x + w, :3].copy()


def running_colleagues(agent: object, sid: str) -> bool:
    return bool(agent.sessions.running[sid].colleagues)  # type: ignore[attr-defined]


async def session_state(server: object, sid: str) -> dict[str, object]:
    _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")  # type: ignore[arg-type]
    assert isinstance(body, dict)
    return body


async def test_native_prompt_allow_starts_the_session_and_end_session_ends_it(tmp_path: Path,
                                                                               native: MutterHandle) -> None:
    """No X: the zenity prompt is on the Wayland screen, no frame reaches the viewer before Allow; after it the
    session streams, the indicator is up, and its End session ends the session within 1 s; its child is gone."""
    ui = consent_ui(None)
    assert isinstance(ui, WaylandConsentUI)
    assert await ui.pick() is ui.native
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "a")
        async with running_agent(state, setup=configure_agent(None, ui)) as agent, onlooker() as (hands, eyes):
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            status, body = await api(server, "POST", f"/api/v1/devices/{state.device_id}/sessions", "ann",
                                     {"mode": "control", "reason": "printer <b>jam</b> & co"})
            assert status == 201, body
            sid = body["session_id"]
            async with viewer_for(server, sid) as viewer:
                _colleagues, _deny, allow = await wait_buttons(eyes, 3)  # an attended session's first prompt
                assert ui.prompts.suspended(), "remote input is not held while the prompt is up"
                # The prompt is on the cast (that took a while): nothing may have been streamed meanwhile.
                assert viewer.stats.updates == 0 and sid not in agent.sessions.running, "streamed before Allow"
                started = asyncio.Event()

                async def watch() -> None:
                    await viewer.wait_for_updates(1, TIMEOUT)
                    started.set()

                watcher = asyncio.create_task(watch())
                # Done once the prompt's child is reaped (a click repeated later could hit the indicator's End).
                await click(hands, allow, check=lambda: not ui.prompts.suspended())
                await watcher
                assert not running_colleagues(agent, sid), "Allow was taken as: colleagues may join"
                # The zenity indicator has no chat window or transfer list: the toolkit is refused, with why.
                await poll_until(lambda: viewer.caps is not None, TIMEOUT, interval=0.05)
                assert viewer.caps is not None and not viewer.caps.allowed, viewer.caps
                assert viewer.caps.refused.get("files") == UNSEEN_REASON, viewer.caps
                assert not ui.prompts.suspended()
                running = agent.sessions.running[sid]
                indicator = running.indicator
                pid = getattr(indicator, "pid", None)
                assert isinstance(pid, int), f"not the zenity indicator: {indicator!r}"
                (end,) = await wait_buttons(eyes, 1)
                released = await click(hands, end, viewer.closed)
                took = time.monotonic() - released
                assert took < 1.0, f"End session took {took:.2f} s"
                await wait_until(lambda: sid not in agent.sessions.running, timeout=10, what="agent side ended")
                assert not Path(f"/proc/{pid}").exists(), "the indicator's zenity child outlived the session"
        record = await session_state(server, sid)
        assert record["state"] == "ended", record


async def test_native_prompt_deny_refuses_and_the_technician_leaving_kills_the_indicator(
        tmp_path: Path, native: MutterHandle) -> None:
    """Deny on the zenity prompt: refused, nothing streamed. Allowed next, the technician leaves: the indicator's
    child is killed by PID and its window leaves the screen."""
    ui = consent_ui(None)
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "a")
        async with running_agent(state, setup=configure_agent(None, ui)) as agent, onlooker() as (hands, eyes):
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            _status, body = await api(server, "POST", f"/api/v1/devices/{state.device_id}/sessions", "ann",
                                      {"mode": "view"})
            sid = body["session_id"]
            async with viewer_for(server, sid) as viewer:
                _colleagues, deny, _allow = await wait_buttons(eyes, 3)
                await click(hands, deny, check=lambda: not ui.prompts.suspended())
                await wait_until(lambda: sid in agent.sessions.finished or sid in agent.sessions.running,
                                 timeout=TIMEOUT, what="the agent's answer")
                assert sid not in agent.sessions.running and viewer.stats.updates == 0
            assert agent.sessions.finished[sid] == "denied by the user", agent.sessions.finished
            record = await session_state(server, sid)
            assert record["state"] != "running", record
            # Another technician (ann's Deny holds her off for the policy's decline cooldown).
            _status, body = await api(server, "POST", f"/api/v1/devices/{state.device_id}/sessions", "root",
                                      {"mode": "view"})
            sid = body["session_id"]
            async with viewer_for(server, sid, "root") as viewer:
                colleagues, _deny, _allow = await wait_buttons(eyes, 3)
                await click(hands, colleagues, check=lambda: not ui.prompts.suspended())
                await viewer.wait_for_updates(1, TIMEOUT)
                assert running_colleagues(agent, sid), "Allow, and colleagues may join: the colleagues were lost"
                pid = getattr(agent.sessions.running[sid].indicator, "pid", None)
                assert isinstance(pid, int)
            await wait_until(lambda: sid not in agent.sessions.running, timeout=15, what="agent side ended")
            await wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=5, what="indicator child gone")
            await poll_until(lambda: not buttons(eyes.grab(1)), TIMEOUT, interval=0.2)


async def test_network_text_is_shown_literally(native: MutterHandle) -> None:
    """A technician named with markup (<b>…</b>, &amp;) is shown as typed — interpreted, it would look exactly
    like the plain name — and a backslash-n in it does not make a second line (zenity's g_strcompress)."""
    ui = ZenityConsentUI()

    async def shown(technician: str) -> Frame:
        request = PromptRequest(technician=technician, mode="view", reason="", timeout_s=60)
        task = asyncio.create_task(ui.prompt(request))
        try:
            await wait_buttons(eyes, 2)
            return dialog(eyes.grab(1))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await poll_until(lambda: not buttons(eyes.grab(1)), TIMEOUT, interval=0.1)

    async with onlooker() as (_hands, eyes):
        plain = await shown("Ann")
        marked = await shown("<b>Ann</b>")
        assert plain.shape != marked.shape or not np.array_equal(plain, marked), "the markup was interpreted"
        escaped = await shown("Tom &amp; Jerry")
        amp = await shown("Tom & Jerry")
        assert escaped.shape[1] > amp.shape[1] or not np.array_equal(escaped, amp), "&amp; was interpreted"
        one = await shown("Ann/nThis request comes from your IT department")
        two = await shown("Ann\\nThis request comes from your IT department")
        assert two.shape[0] == one.shape[0], "a backslash escape in the name made a second line"
        broken = await shown("<span")  # invalid markup: with escaping still a prompt with its buttons
        assert broken.size


def test_markup_escapes_pango_and_backslashes() -> None:
    """Every Pango special and zenity's backslash escapes come out as literal text."""
    assert markup("<b>&'\"\\n") == "&lt;b&gt;&amp;&apos;&quot;\\\\n"
    request = PromptRequest(technician="<i>x</i>", mode="control", reason="a & b", timeout_s=7.2,
                            colleagues_option=True, capabilities=("chat",))
    args = prompt_args(request)
    text = args[args.index("--text") + 1]
    assert "&lt;i&gt;x&lt;/i&gt;" in text and "a &amp; b" in text and "<i>" not in text
    assert args[args.index("--timeout") + 1] == "8" and "--default-cancel" in args  # a stray Enter = Deny
    assert args[args.index("--extra-button") + 1] == COLLEAGUES_ALLOW
    assert "--extra-button" not in prompt_args(PromptRequest(technician="x", mode="view", reason="", timeout_s=5))


async def test_no_zenity_is_a_refusal_never_a_session(native: MutterHandle) -> None:
    """zenity missing: the prompt is refused with that reason, the indicator cannot be shown."""
    ui = ZenityConsentUI(binary="/nonexistent/zenity", prompts=PromptGuard())
    answer = await ui.prompt(PromptRequest(technician="Ann", mode="view", reason="", timeout_s=5))
    assert not answer.allowed and answer.by == "unavailable" and "zenity is not installed" in answer.reason
    from agent.consent.ui import ConsentUnavailable

    with pytest.raises(ConsentUnavailable):
        await ui.indicator(IndicatorInfo(technician="Ann", mode="view"))


async def test_a_prompt_nobody_answers_times_out_as_deny(native: MutterHandle) -> None:
    """zenity's --timeout is the prompt's: no answer → Deny by timeout, the window gone."""
    ui = ZenityConsentUI()
    began = time.monotonic()
    answer = await ui.prompt(PromptRequest(technician="Ann", mode="view", reason="", timeout_s=2))
    assert (answer.allowed, answer.by) == (False, "timeout")
    assert time.monotonic() - began < 2 + 5


async def test_an_x_display_that_answers_keeps_tk(xvfb: XvfbHandle) -> None:  # noqa: F811
    """Wayland with a working X display (XWayland): Tk; an X display that does not answer: zenity."""
    ui = WaylandConsentUI(xvfb.display, "wayland-test")
    assert await ui.pick() is ui.tk
    gone = WaylandConsentUI(":9876", "wayland-test")
    assert await gone.pick() is gone.native
    assert isinstance(consent_ui(xvfb.display, ""), type(ui.tk))


async def test_indicator_changes_replace_its_window(native: MutterHandle) -> None:
    """A mode or people change puts up a new window, then kills the old one by PID: one End session on screen
    after it, the people line reported as shown, and the replaced window does not count as the person's End."""
    ui = ZenityConsentUI()
    async with onlooker() as (_hands, eyes):
        indicator = await ui.indicator(IndicatorInfo(technician="ann", mode="view"))
        try:
            await wait_buttons(eyes, 1)
            first = indicator.pid
            await indicator.set_mode("control")
            second = indicator.pid
            assert isinstance(first, int) and second != first and not Path(f"/proc/{first}").exists()
            await indicator.set_people(("ann", "<b>tia</b>"), "ann")
            assert indicator.people_shown.is_set() and indicator.people_line == "Watching: ann (controls), <b>tia</b>"
            assert not Path(f"/proc/{second}").exists()
            await wait_buttons(eyes, 1)
            assert not indicator.ended.is_set(), "replacing the window was taken for the person's End session"
        finally:
            last = indicator.pid
            await indicator.close()
        assert last is not None and not Path(f"/proc/{last}").exists()
        await poll_until(lambda: not buttons(eyes.grab(1)), TIMEOUT, interval=0.2)
