"""Input from the viewer reaches real X clients on Xvfb (pynput/XTest), and bad input is refused."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from agent.input_injector import KEYSYMS, InputRefused, PynputInjector
from agent.screen import Monitor
from agent.screen.xdisplay import open_display
from agent.viewer import Viewer
from agent.xtest_input import XTestInput
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
            start = len(app.lines)
            await viewer.send(stream.InputMouse(x=400, y=100, action="wheel", dy=2))  # two clicks down
            await viewer.send(stream.InputMouse(x=400, y=100, action="wheel", dy=-1))  # one up
            await app.expect(lambda line: line == "wheel up", timeout=10, start=start)
            assert app.lines[start:] == ["wheel down", "wheel down", "wheel up"]
        stats = await served.stats
    assert stats.refused_inputs == 0 and stats.injected_inputs >= 14


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


#: Button 3 (right) in the pointer's state mask.
X_BUTTON3_MASK = 1 << 10


def _buttons(display: str) -> int:
    """The pointer's button and modifier mask, as the X server holds it now."""
    dpy = open_display(display)
    try:
        return int(dpy.screen().root.query_pointer().mask)
    finally:
        dpy.close()


def _pressed(display: str, keysym: int) -> bool:
    """Whether the X server holds the key of ``keysym`` down now (asked on a connection of its own)."""
    dpy = open_display(display)
    try:
        keycode = dpy.keysym_to_keycode(keysym)
        return bool(dpy.query_keymap()[keycode // 8] & (1 << (keycode % 8)))
    finally:
        dpy.close()


async def test_keys_and_pointer_go_at_once_and_text_after_them_waits(xvfb: XvfbHandle) -> None:
    """Keys on the map and pointer events are sent on the caller's thread without a round trip; text (pynput's)
    after them waits until the server has them; release_all lets go of keys and buttons pressed that way."""
    injector = PynputInjector(xvfb.display)
    shift = KEYSYMS["ShiftLeft"]
    try:
        monitor = Monitor(100, 50, 200, 100)
        assert injector.inject_now(stream.InputKey(code="ShiftLeft", action="down"), monitor)
        await poll_until(lambda: _pressed(xvfb.display, shift), timeout=5)
        assert injector.inject_now(stream.InputMouse(x=10, y=20), monitor)
        await poll_until(lambda: mouse_location(xvfb.display) == (110, 70), timeout=5)
        assert injector.inject_now(stream.InputMouse(x=5000, y=-3), monitor)  # clamped to the monitor
        await poll_until(lambda: mouse_location(xvfb.display) == (299, 50), timeout=5)
        assert injector.inject_now(stream.InputMouse(x=1, y=2, action="down", button=2), monitor)
        await poll_until(lambda: _buttons(xvfb.display) & X_BUTTON3_MASK, timeout=5)
        assert injector.inject_now(stream.InputMouse(x=1, y=2, action="wheel", dy=3), monitor)
        assert not injector.inject_now(stream.InputMouse(x=1, y=2, action="wheel", dy=90), monitor)  # pynput's
        assert not injector.inject_now(stream.InputText(text="x"), monitor)
        with pytest.raises(InputRefused):
            injector.inject_now(stream.InputKey(code="NoSuchKey", action="down"), monitor)
        with pytest.raises(InputRefused):
            injector.inject_now(stream.InputMouse(x=1, y=1, action="down", button=4), monitor)
        with injector._lock:  # the input thread is busy with the display: the event goes there, after it
            assert not injector.inject_now(stream.InputKey(code="KeyW", action="down"), monitor)
        assert not _pressed(xvfb.display, KEYSYMS["KeyW"])
        assert injector.inject_now(stream.InputKey(code="KeyQ", action="down"), monitor)
        injector.release_all()  # confirmed before it returns: no polling here
        assert not _pressed(xvfb.display, shift) and not _pressed(xvfb.display, KEYSYMS["KeyQ"])
        assert not _buttons(xvfb.display) & X_BUTTON3_MASK
    finally:
        injector.close()


def test_xtest_input_declines_instead_of_blocking_when_the_server_stops_reading(xvfb: XvfbHandle) -> None:
    """With the X server stopped, sends fill the socket, then python-xlib's buffer up to the bound, then are
    declined (the caller goes the blocking way in its input thread); none blocks. Resumed, all are delivered."""
    direct = XTestInput(xvfb.display)
    keysym = KEYSYMS["KeyZ"]
    os.kill(xvfb.pid, signal.SIGSTOP)
    try:
        accepted, declined = 0, False
        for i in range(200_000):  # ~7 MB of requests: far beyond any socket buffer
            if not direct.key(keysym, down=i % 2 == 0):
                declined = True
                break
            accepted += 1
        assert declined, f"{accepted} key events queued without a decline"
        assert accepted < 10_000  # what waits unsent stays small (the socket's share, then MAX_BACKLOG bytes)
        assert not direct.move(1, 1) and not direct.button(1, True) and not direct.wheel(0, 1)
    finally:
        os.kill(xvfb.pid, signal.SIGCONT)
    direct.sync()  # everything queued reaches the server once it reads again
    if accepted % 2:  # the last accepted was a press
        assert direct.key(keysym, down=False)
        direct.sync()
    assert not _pressed(xvfb.display, keysym) and direct.errors == 0
    direct.close()
