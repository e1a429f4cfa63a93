"""End-to-end screen sessions on a real Xvfb: mss capture, websocket, reference viewer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
from collections.abc import Iterator
from typing import Any

import mss
import numpy as np
import pytest

from agent.screen import cut
from agent.screen.flow import FlowSettings
from agent.screen.tiles import Rect
from agent.viewer import Viewer
from protocol import stream
from protocol.stream import Encoding, Kind
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
    """A viewer that stops acking holds the agent at its window of updates in flight; acking resumes with the newest state."""
    async with tk_app(xvfb.display) as app, serve_session("view", xvfb.display) as served:
        async with Viewer(served.url, auto_ack=False) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=10)
            await app.command("animate on")
            window = FlowSettings().max_in_flight
            await viewer.wait_for(lambda v: v.stats.updates >= window, timeout=5)
            received = viewer.stats.updates
            with pytest.raises(TimeoutError):
                await viewer.wait_for(lambda v: v.stats.updates > received, timeout=1.0)
            assert received == window
            await viewer.ack_pending()
            await viewer.wait_for(lambda v: v.stats.updates >= window + 2, timeout=5)
            await app.command("animate off")
        stats = await served.stats
    assert stats.max_in_flight == window
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
    async with serve_session("view", xvfb.display) as served:
        async with Viewer(served.url) as viewer:
            await viewer.wait_for(lambda v: v.cursor is not None, timeout=10)
            subprocess.run(["xdotool", "mousemove", "123", "45"], env=xvfb.env(), check=True, timeout=5)
            await viewer.wait_for(
                lambda v: v.cursor is not None and (v.cursor.x, v.cursor.y) == (123, 45), timeout=5
            )
            assert viewer.cursor is not None and viewer.cursor.visible


# --- damage-driven capture (issue 13) ---------------------------------------------------


class RecordingViewer(Viewer):
    """The reference viewer, also noting each drawn rectangle's kind, encoding and box."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.drawn: list[tuple[Kind, Encoding, int, int, int, int]] = []

    def _draw(self, update: stream.Update) -> None:
        self.drawn.append((update.kind, update.encoding, update.x, update.y, update.w, update.h))
        super()._draw(update)


def monitor_bgr(display: str, left: int, top: int, width: int, height: int) -> np.ndarray:
    """An independent mss grab of one screen area, as BGR."""
    with mss.MSS(display=display) as grabber:
        shot = grabber.grab({"left": left, "top": top, "width": width, "height": height})
    return np.frombuffer(shot.raw, dtype=np.uint8).reshape(height, width, 4)[:, :, :3].copy()


async def holds_screen(viewer: Viewer, display: str, area: tuple[int, int, int, int], timeout: float = 10) -> None:
    """Wait until the viewer's framebuffer equals the screen area exactly (the screen is still)."""
    async with asyncio.timeout(timeout):
        while True:
            expected = monitor_bgr(display, *area)
            if viewer.framebuffer.shape == expected.shape and np.array_equal(viewer.framebuffer, expected):
                return
            before = viewer.stats.rects
            with contextlib.suppress(TimeoutError):  # a new rectangle, or re-read the screen
                await viewer.wait_for(lambda v: v.stats.rects > before, timeout=0.5)


async def quiet(viewer: Viewer, seconds: float) -> bool:
    """True when nothing at all arrived for ``seconds``."""
    before = viewer.stats.bytes_received
    with contextlib.suppress(TimeoutError):
        await viewer.wait_for(lambda v: v.stats.bytes_received > before, timeout=seconds)
    return viewer.stats.bytes_received == before


async def test_typing_is_sent_once_lossless_from_damage(xvfb: XvfbHandle) -> None:
    """Keys typed into a Tk entry arrive as small lossless rectangles only (PNG, FILL for the caret), the viewer equals the screen, no refresh follows."""
    area = (0, 0, xvfb.width, xvfb.height)
    async with tk_app(xvfb.display) as app, serve_session("control", xvfb.display) as served:
        viewer = RecordingViewer(served.url)
        async with viewer:
            await holds_screen(viewer, xvfb.display, area)
            await app.command("focus")
            async with asyncio.timeout(10):  # the focus highlight and any refinement of it
                while not await quiet(viewer, 0.6):
                    pass
            first = len(viewer.drawn)
            for code in ("KeyH", "KeyE", "KeyL", "KeyL", "KeyO"):
                await viewer.press_key(code)
            await app.expect(lambda line: line == "entry hello")
            await holds_screen(viewer, xvfb.display, area)
            assert await quiet(viewer, 0.6)  # settled: no refresh of what typing sent
            typed = viewer.drawn[first:]
    stats = await served.stats
    assert typed, "typing sent nothing"
    assert all(kind is Kind.UPDATE and enc in (Encoding.PNG, Encoding.FILL) for kind, enc, *_ in typed), typed
    assert all(w * h <= 64 * 64 * 2 for *_, w, h in typed), typed  # cut to the changed pixels, not whole tiles
    assert stats.capture == "damage" and stats.damage_grabs >= 1
    assert stats.full_grabs <= 1 + int(stats.updates_sent)  # no periodic full-screen grab per update
    assert stats.reader_grabs >= 1  # keys captured in the damage reader's thread as their reports came


async def test_viewer_equals_screen_after_motion_and_window_move(xvfb: XvfbHandle) -> None:
    """After an animation stops and after the window moves, the viewer's image is the screen, pixel for pixel."""
    area = (0, 0, xvfb.width, xvfb.height)
    async with tk_app(xvfb.display) as app, serve_session("view", xvfb.display) as served:
        async with Viewer(served.url) as viewer:
            await holds_screen(viewer, xvfb.display, area)
            await app.command("animate on")
            before = viewer.stats.updates
            await viewer.wait_for(lambda v: v.stats.updates >= before + 10, timeout=10)
            await app.command("animate off")
            await holds_screen(viewer, xvfb.display, area)
            await app.command("move 150 200")
            await holds_screen(viewer, xvfb.display, area)
            assert np.abs(viewer.region(200, 250, 20, 20).astype(int) - [0, 0, 255]).max() < 10  # red block moved
    stats = await served.stats
    assert stats.capture == "damage" and stats.damage_grabs >= 10
    # Most frames were captured in the damage reader's thread (the window had room when the report came),
    # and the viewer still equals the screen after both: the two paths share one pipeline, one at a time.
    assert stats.reader_grabs >= 5, stats


async def test_a_video_over_fills_is_cut_to_its_differing_pixels_and_ends_exact(
        xvfb: XvfbHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """ffplay's colour bars with a turning hue fill the screen: the bars go as FILLs, the pictures drawn over them
    are cut to their pixels that differ from the colours under them (the native part, in the live session), and
    once the stream ends on its last frame the viewer equals the screen, pixel for pixel."""
    cuts: list[tuple[Rect, Rect | None]] = []
    real = cut.differing_box

    def recorded(frame: np.ndarray, under: np.ndarray, rect: Rect) -> Rect | None:
        box = real(frame, under, rect)
        cuts.append((rect, box))
        return box

    monkeypatch.setattr(cut, "differing_box", recorded)
    area = (0, 0, xvfb.width, xvfb.height)
    source = f"testsrc2=size={xvfb.width}x{xvfb.height}:rate=30:duration=3,hue=H=2*PI*t/3"
    player = subprocess.Popen(
        ["ffplay", "-f", "lavfi", "-i", source, "-an", "-loglevel", "error", "-noborder", "-left", "0", "-top", "0"],
        env={**xvfb.env(), "SDL_AUDIODRIVER": "dummy"}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        async with serve_session("view", xvfb.display) as served:
            async with RecordingViewer(served.url) as viewer:
                await viewer.wait_for(lambda v: sum(e is Encoding.FILL for _, e, *_ in v.drawn) >= 30, timeout=30)
                # ffplay keeps its last frame on screen when the stream ends: then the viewer is exact.
                await holds_screen(viewer, xvfb.display, area, timeout=30)
                drawn = list(viewer.drawn)
    finally:
        player.kill()
        player.wait()
    assert cut.AVAILABLE
    assert any(box is not None and box.area < rect.area for rect, box in cuts), cuts[:5]
    assert any(enc in (Encoding.JPEG, Encoding.JPEG_LEAN) for _, enc, *_ in drawn)


async def test_damage_follows_the_selected_monitor() -> None:
    """Two RandR monitors: after switching to the right one, changes there (offset in X) reach the viewer exactly."""
    handle = start_xvfb(1600, 600)
    try:
        for args in (["--setmonitor", "left", "800/200x600/150+0+0", "screen"],
                     ["--setmonitor", "right", "800/200x600/150+800+0", "none"]):
            subprocess.run(["xrandr", *args], env=handle.env(), check=True, timeout=10)
        right = (800, 0, 800, 600)
        async with tk_app(handle.display, 760, 400) as app, serve_session("view", handle.display) as served:
            async with Viewer(served.url) as viewer:
                await holds_screen(viewer, handle.display, (0, 0, 800, 600))
                assert viewer.selected == 1 and len(viewer.monitors) == 3
                await app.command("move 820 100")
                await viewer.select_monitor(2)
                await viewer.wait_for(lambda v: v.selected == 2, timeout=10)
                await holds_screen(viewer, handle.display, right)
                await app.command("fill #12ab34")
                await holds_screen(viewer, handle.display, right)
                probe = viewer.region(20 + 640, 100, 64, 64)
                assert np.array_equal(probe, np.full((64, 64, 3), [0x34, 0xAB, 0x12], dtype=np.uint8))
        stats = await served.stats
        assert stats.capture == "damage" and stats.monitor == 2
    finally:
        handle.stop()


async def test_without_damage_extension_capture_polls(caplog: pytest.LogCaptureFixture) -> None:
    """An X server without DAMAGE: the session says so in the log, polls, and still ends exact."""
    handle = start_xvfb(640, 480, extra_args=("-extension", "DAMAGE"))
    try:
        with caplog.at_level(logging.WARNING, logger="agent.screen.damage"):
            async with tk_app(handle.display, 600, 400) as app, serve_session("view", handle.display) as served:
                async with Viewer(served.url) as viewer:
                    await holds_screen(viewer, handle.display, (0, 0, 640, 480))
                    await app.command("fill #12ab34")
                    await holds_screen(viewer, handle.display, (0, 0, 640, 480))
            stats = await served.stats
        assert stats.capture == "poll" and stats.damage_grabs == 0
        assert any("falls back to polling" in r.getMessage() and "DAMAGE" in r.getMessage() for r in caplog.records)
    finally:
        handle.stop()
