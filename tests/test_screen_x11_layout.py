"""X11 sessions follow RandR monitor changes made during the session (real Xvfb, real session, reference viewer)."""

from __future__ import annotations

import subprocess
import time

import numpy as np

from agent.screen.capture import Monitor, pick_monitor
from agent.screen.xlayout import XLayoutWatch
from agent.viewer import Viewer
from tests.test_screen_session import holds_screen
from tests.test_screen_support import serve_session, tk_app
from tests.xvfb import XvfbHandle, start_xvfb


def xrandr(handle: XvfbHandle, *args: str) -> None:
    subprocess.run(["xrandr", *args], env=handle.env(), check=True, timeout=10)


def test_pick_monitor_keeps_the_shown_monitor_else_the_primary() -> None:
    """Same rectangle, else same origin (resized), else the primary; 0 (all monitors) stays 0."""
    union = Monitor(0, 0, 1600, 600)
    left, right = Monitor(0, 0, 800, 600, True), Monitor(800, 0, 800, 600)
    assert pick_monitor([union, left, right], [union, right, left], 2) == 1  # moved in the list
    assert pick_monitor([union, left, right], [union, Monitor(0, 0, 1024, 600), right], 1) == 1  # resized
    assert pick_monitor([union, left, right], [union, Monitor(0, 0, 800, 600), left], 2) == 2  # gone: primary
    assert pick_monitor([union, left, right], [union, left, right], 0) == 0
    assert pick_monitor([union, left, right], [Monitor(0, 0, 800, 600)], 2) == 0  # no monitors left: the screen


def test_watch_reports_a_client_monitor_within_a_period_and_stays_quiet_otherwise() -> None:
    """``--setmonitor`` sends no RandR event: the 1-second check finds it; an unchanged layout notifies nothing."""
    handle = start_xvfb(1600, 600)
    watch = XLayoutWatch(handle.display)
    try:
        calls: list[float] = []
        watch.start(lambda: calls.append(time.monotonic()))
        deadline = time.monotonic() + 30
        while watch.checks < 2 and time.monotonic() < deadline:  # two still checks have run
            time.sleep(0.05)
        assert watch.checks >= 2 and calls == []
        xrandr(handle, "--setmonitor", "right", "800/200x600/150+800+0", "none")
        added = time.monotonic()
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(calls) == 1, calls
        assert calls[0] - added < 10  # a period plus the settle time, with room for a loaded box
    finally:
        watch.close()
        handle.stop()


async def test_session_follows_monitors_added_and_removed() -> None:
    """A monitor added mid-session reaches the viewer, can be selected and streams exactly; when it is removed,
    the viewer is moved to a monitor that exists and its frames are that monitor's."""
    handle = start_xvfb(1600, 600)
    try:
        async with tk_app(handle.display, 760, 400) as app, serve_session("view", handle.display) as served:
            async with Viewer(served.url) as viewer:
                await viewer.wait_for(lambda v: v.selected is not None, timeout=15)
                assert len(viewer.monitors) == 2  # the union and Xvfb's one output
                await holds_screen(viewer, handle.display, (0, 0, 1600, 600), timeout=20)
                await app.command("move 820 100")
                await app.command("fill #12ab34")
                xrandr(handle, "--setmonitor", "left", "800/200x600/150+0+0", "screen")
                xrandr(handle, "--setmonitor", "right", "800/200x600/150+800+0", "none")
                await viewer.wait_for(lambda v: len(v.monitors) == 3, timeout=20)
                rects = [(m.x, m.y, m.w, m.h) for m in viewer.monitors]
                assert rects[1:] == [(0, 0, 800, 600), (800, 0, 800, 600)], rects
                assert viewer.selected == 1  # the monitor shown began at (0, 0): the one there now
                await viewer.select_monitor(2)
                await viewer.wait_for(lambda v: v.selected == 2, timeout=10)
                await holds_screen(viewer, handle.display, (800, 0, 800, 600), timeout=20)
                assert viewer.framebuffer.shape == (600, 800, 3)
                probe = viewer.region(20 + 640, 100, 64, 64)  # the Tk window's green canvas, on the new monitor
                assert np.array_equal(probe, np.full((64, 64, 3), [0x34, 0xAB, 0x12], dtype=np.uint8))
                xrandr(handle, "--delmonitor", "right")
                await viewer.wait_for(lambda v: len(v.monitors) == 2, timeout=20)
                assert viewer.selected == 1 and (viewer.monitors[1].x, viewer.monitors[1].w) == (0, 800)
                await holds_screen(viewer, handle.display, (0, 0, 800, 600), timeout=20)
        stats = await served.stats
        assert stats.monitor == 1
    finally:
        handle.stop()
