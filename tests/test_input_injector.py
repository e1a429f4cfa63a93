"""Input from the viewer reaches real X clients on Xvfb (pynput/XTest), and bad input is refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.input_injector import KEYSYMS, InputRefused, PynputInjector
from agent.screen import Monitor
from agent.viewer import Viewer
from protocol import stream
from tests.test_screen_support import mouse_location, poll_until, serve_session, tk_app
from tests.xvfb import XvfbHandle, start_xvfb


@pytest.fixture
def xvfb() -> Iterator[XvfbHandle]:
    """A 1024x768 Xvfb for one test, killed by PID afterwards."""
    handle = start_xvfb(1024, 768)
    yield handle
    handle.stop()


def test_keysym_table_covers_the_documented_codes() -> None:
    """Letters, digits, F-keys, arrows, modifiers and punctuation codes all map to keysyms."""
    required = [f"Key{c}" for c in "AZ"] + ["Digit0", "Digit9", "F1", "F12", "Enter", "Backspace", "Tab",
                "Escape", "Space", "ArrowLeft", "ArrowDown", "ShiftLeft", "ShiftRight", "ControlLeft",
                "ControlRight", "AltLeft", "AltRight", "MetaLeft", "MetaRight", "Minus", "Slash", "Backquote"]
    assert all(code in KEYSYMS for code in required)
    assert KEYSYMS["KeyA"] == ord("a") and KEYSYMS["Digit7"] == ord("7") and KEYSYMS["F12"] == 0xFFC9


async def test_keys_and_click_reach_tk_widgets(xvfb: XvfbHandle) -> None:
    """Key presses (with Shift) and text typed from the viewer land in a Tk Entry; a click presses a Tk Button."""
    async with tk_app(xvfb.display) as app, serve_session("control", xvfb.display) as served:
        async with Viewer(served.url) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=10)
            await viewer.click(60, 310)  # into the Entry
            await app.command("focus")
            await viewer.press_key("KeyH")
            await viewer.send_key("ShiftLeft", "down")
            await viewer.press_key("KeyI")
            await viewer.send_key("ShiftLeft", "up")
            await viewer.press_key("Digit5")
            await viewer.send_text("ok")
            await app.expect(lambda line: line == "entry hI5ok", timeout=10)
            await viewer.click(330, 312)  # the Button
            await app.expect(lambda line: line == "clicked", timeout=10)
            await poll_until(lambda: mouse_location(xvfb.display) == (330, 312), timeout=5)
        stats = await served.stats
    assert stats.refused_inputs == 0 and stats.injected_inputs >= 12


async def test_pointer_moves_and_is_clamped_to_the_monitor(xvfb: XvfbHandle) -> None:
    """A move lands at the given monitor pixel; coordinates beyond the monitor are clamped to its edge."""
    async with serve_session("control", xvfb.display) as served:
        async with Viewer(served.url) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=10)
            await viewer.send_mouse(321, 123)
            await poll_until(lambda: mouse_location(xvfb.display) == (321, 123), timeout=5)
            await viewer.send_mouse(60000, 60000)
            await poll_until(lambda: mouse_location(xvfb.display) == (xvfb.width - 1, xvfb.height - 1), timeout=5)


async def test_unknown_key_code_is_refused_and_counted(xvfb: XvfbHandle) -> None:
    """A syntactically valid but unmapped key code is refused with input_refused, not injected."""
    async with serve_session("control", xvfb.display) as served:
        async with Viewer(served.url) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=10)
            await viewer.send_key("Hyper7", "down")
            await viewer.send(stream.InputMouse(x=1, y=1, action="down", button=4))
            await viewer.wait_for(lambda v: len(v.stats.errors) >= 2, timeout=5)
            assert [e.code for e in viewer.stats.errors] == ["input_refused", "input_refused"]
        stats = await served.stats
    assert stats.refused_inputs == 2


def test_injector_offsets_into_the_monitor_and_releases_held_keys(xvfb: XvfbHandle) -> None:
    """Coordinates are offset by the monitor origin; release_all lets go of held buttons."""
    injector = PynputInjector(xvfb.display)
    try:
        monitor = Monitor(100, 50, 200, 100)
        injector.inject(stream.InputMouse(x=10, y=20), monitor)
        assert mouse_location(xvfb.display) == (110, 70)
        injector.inject(stream.InputMouse(x=10, y=20, action="down", button=0), monitor)
        injector.inject(stream.InputKey(code="ShiftLeft", action="down"), monitor)
        injector.release_all()
        try:
            injector.inject(stream.InputKey(code="NoSuchKey", action="down"), monitor)
        except InputRefused:
            pass
        else:
            raise AssertionError("unknown key code was accepted")
    finally:
        injector.close()
