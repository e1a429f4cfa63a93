"""End-to-end screen sessions on a real Xvfb: mss capture, websocket, reference viewer."""

from __future__ import annotations

from collections.abc import Iterator

import mss
import numpy as np
import pytest

from agent.viewer import Viewer
from tests.test_screen_support import mouse_location, serve_session, tk_app
from tests.xvfb import XvfbHandle, start_xvfb


@pytest.fixture
def xvfb() -> Iterator[XvfbHandle]:
    """A 1024x768 Xvfb for one test, killed by PID afterwards."""
    handle = start_xvfb(1024, 768)
    yield handle
    handle.stop()



def screen_bgr(display: str, width: int, height: int) -> np.ndarray:
    """An independent mss grab of the top-left region, as BGR."""
    with mss.MSS(display=display) as grabber:
        shot = grabber.grab({"left": 0, "top": 0, "width": width, "height": height})
    return np.frombuffer(shot.raw, dtype=np.uint8).reshape(height, width, 4)[:, :, :3]


async def test_frames_match_screen_and_end_lossless(xvfb: XvfbHandle) -> None:
    """The viewer's framebuffer matches the screen within JPEG tolerance, then exactly after refresh."""
    async with tk_app(xvfb.display) as app, serve_session("view", xvfb.display) as served:
        async with Viewer(served.url) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=10)
            assert viewer.framebuffer.shape == (xvfb.height, xvfb.width, 3)
            expected = screen_bgr(xvfb.display, xvfb.width, xvfb.height)
            diff = np.abs(viewer.framebuffer.astype(int) - expected.astype(int))
            assert diff.mean() < 6, f"mean error {diff.mean()}"
            # Red block of the Tk canvas sits at the window origin.
            assert np.abs(viewer.region(50, 50, 20, 20).astype(int) - [0, 0, 255]).max() < 40
            await viewer.wait_for(
                lambda v: np.array_equal(v.framebuffer, expected), timeout=5
            )
            await app.command("fill #12ab34")
            await viewer.wait_for(
                lambda v: np.array_equal(v.region(640, 0, 64, 64), np.full((64, 64, 3), [0x34, 0xAB, 0x12])),
                timeout=5,
            )
    stats = await served.stats
    assert stats.updates_sent >= 2 and stats.refused_inputs == 0


async def test_idle_screen_sends_nothing(xvfb: XvfbHandle) -> None:
    """After the first frame and its refinement, a still screen sends 0 bytes for 1 s."""
    async with tk_app(xvfb.display), serve_session("view", xvfb.display) as served:
        async with Viewer(served.url) as viewer:
            expected = screen_bgr(xvfb.display, xvfb.width, xvfb.height)
            await viewer.wait_for(lambda v: np.array_equal(v.framebuffer, expected), timeout=10)
            before = viewer.stats.bytes_received
            with pytest.raises(TimeoutError):
                await viewer.wait_for(lambda v: v.stats.bytes_received > before, timeout=1.0)
            assert viewer.stats.bytes_received == before


async def test_lagging_viewer_never_gets_a_backlog(xvfb: XvfbHandle) -> None:
    """A viewer that stops acking holds the agent at 2 updates in flight; acking resumes with the newest state."""
    async with tk_app(xvfb.display) as app, serve_session("view", xvfb.display) as served:
        async with Viewer(served.url, auto_ack=False) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=10)
            await app.command("animate on")
            await viewer.wait_for(lambda v: v.stats.updates >= 2, timeout=5)
            received = viewer.stats.updates
            with pytest.raises(TimeoutError):
                await viewer.wait_for(lambda v: v.stats.updates > received, timeout=1.0)
            assert received == 2
            await viewer.ack_pending()
            await viewer.wait_for(lambda v: v.stats.updates >= 4, timeout=5)
            await app.command("animate off")
        stats = await served.stats
    assert stats.max_in_flight == 2
    assert stats.skipped_frames > 10  # ~1 s blocked at the fast capture interval


async def test_view_mode_refuses_input(xvfb: XvfbHandle) -> None:
    """In view mode input is answered with an error and the pointer does not move."""
    async with serve_session("view", xvfb.display) as served:
        async with Viewer(served.url) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=10)
            start = mouse_location(xvfb.display)
            target = (start[0] // 2 + 17, start[1] // 2 + 23)
            await viewer.send_mouse(*target)
            await viewer.press_key("KeyA")
            await viewer.wait_for(lambda v: len(v.stats.errors) >= 3, timeout=5)
            assert {e.code for e in viewer.stats.errors} == {"view_only"}
            assert mouse_location(xvfb.display) == start
        stats = await served.stats
    assert stats.refused_inputs == 3 and stats.injected_inputs == 0


async def test_monitor_selection_switches_geometry(xvfb: XvfbHandle) -> None:
    """Selecting monitor 0 (all) re-announces the monitor list and resends a full frame; a bad index is refused."""
    async with serve_session("view", xvfb.display) as served:
        async with Viewer(served.url) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=10)
            with mss.MSS(display=xvfb.display) as grabber:
                expected = grabber.monitors
            assert len(viewer.monitors) == len(expected)
            assert viewer.selected == (1 if len(expected) > 1 else 0)
            first = viewer.stats.updates
            await viewer.select_monitor(0)
            await viewer.wait_for(lambda v: v.selected == 0 and v.stats.updates > first, timeout=5)
            all_monitors = viewer.monitors[0]
            assert (all_monitors.w, all_monitors.h) == (expected[0]["width"], expected[0]["height"])
            assert viewer.framebuffer.shape == (all_monitors.h, all_monitors.w, 3)
            await viewer.select_monitor(9)
            await viewer.wait_for(lambda v: any(e.code == "bad_monitor" for e in v.stats.errors), timeout=5)
            assert viewer.selected == 0


async def test_cursor_position_is_reported(xvfb: XvfbHandle) -> None:
    """Moving the X pointer (xdotool) produces a cursor message with the new position."""
    import subprocess

    async with serve_session("view", xvfb.display) as served:
        async with Viewer(served.url) as viewer:
            await viewer.wait_for(lambda v: v.cursor is not None, timeout=10)
            subprocess.run(["xdotool", "mousemove", "123", "45"], env=xvfb.env(), check=True, timeout=5)
            await viewer.wait_for(
                lambda v: v.cursor is not None and (v.cursor.x, v.cursor.y) == (123, 45), timeout=5
            )
            assert viewer.cursor is not None and viewer.cursor.visible
