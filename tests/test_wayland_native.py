"""The native PipeWire reader (helpline-pwcast) on a real headless Mutter 43.8: damage, cursor, fallback.

Each test starts its own compositor stack (tests/wayland.py). What the native reader holds is compared with
an independent gst-launch cast of the same monitor; typing reaches foot (a native Wayland terminal) through
Mutter's RemoteDesktop session; the pointer is moved through it too. Nothing here is skipped: a missing
helpline-pwcast (scripts/setup.sh builds it) fails the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.screen.damage import Damage
from agent.screen.wayland import mutter
from agent.screen.wayland.frames import PipeWireCapture
from agent.screen.wayland.mutter import MutterSession
from agent.screen.wayland.native import NativeCapture, native_reader
from agent.viewer import Viewer
from tests.test_screen_support import poll_until, serve_session
from tests.test_wayland import FOOT_BG, _reader_children, colour_box, full_window, pointer_shape
from tests.wayland import MutterHandle, adopted_mutter, foot_command

TIMEOUT = 30.0
#: BTN_LEFT (evdev).
BTN_LEFT = 0x110


@pytest.fixture
def wayland(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MutterHandle]:
    with adopted_mutter(tmp_path, monkeypatch, 1920, 1080) as handle:
        yield handle


@contextlib.contextmanager
def foot(handle: MutterHandle) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(foot_command(FOOT_BG),
                            env={**handle.env(), "PS1": "$ "}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def native_cast(cursor_mode: int = mutter.CURSOR_METADATA) -> AsyncIterator[tuple[MutterSession, NativeCapture]]:
    """A Mutter session of its own and helpline-pwcast reading its primary monitor."""
    binary = native_reader({}).binary
    assert binary, "helpline-pwcast is not built (scripts/setup.sh)"
    session = await MutterSession.open(cursor_mode=cursor_mode)
    s = session.stream
    reader = NativeCapture(s.node_id, s.x, s.y, s.w, s.h, binary=binary)
    reader.start(lambda: None)
    try:
        yield session, reader
    finally:
        await asyncio.to_thread(reader.close)
        await session.close()


@contextlib.asynccontextmanager
async def gst_cast(cursor_mode: int = mutter.CURSOR_EMBEDDED) -> AsyncIterator[PipeWireCapture]:
    """An independent cast of the primary monitor: its own Mutter session and gst-launch child."""
    session = await MutterSession.open(cursor_mode=cursor_mode)
    s = session.stream
    reader = PipeWireCapture(s.node_id, s.x, s.y, s.w, s.h)
    reader.start(lambda: None)
    try:
        yield reader
    finally:
        await asyncio.to_thread(reader.close)
        await session.close()


async def settle_same(a: NativeCapture, b: PipeWireCapture) -> None:
    """Wait until both readers hold the same picture (colour channels) — the native one equals the screen."""
    deadline = time.monotonic() + TIMEOUT
    diff = -1
    while time.monotonic() < deadline:
        x, y = await asyncio.to_thread(a.grab, 1), await asyncio.to_thread(b.grab, 1)
        diff = int((x[:, :, :3] != y[:, :, :3]).any(axis=2).sum())
        if diff == 0:
            return
        await asyncio.sleep(0.1)  # polling interval, not synchronization
    raise AssertionError(f"the native reader's frame never equalled the screen ({diff} pixels differ)")


async def collect_damage(reader: NativeCapture, until: float) -> Damage:
    """Every damage report until ``until`` (monotonic), folded."""
    folded = Damage()
    while time.monotonic() < until:
        taken = reader.take()
        folded.full |= taken.full
        folded.rects.extend(taken.rects)
        folded.reports += taken.reports
        await asyncio.sleep(0.05)  # polling interval, not synchronization
    return folded


async def test_typing_in_a_native_window_is_damage_rectangles_and_the_frame_equals_the_screen(
        wayland: MutterHandle) -> None:
    """A key typed into foot is reported as a few small rectangles (not a full frame) and the native reader's frame
    then equals an independent gst-launch cast of the same monitor, pixel for pixel."""
    with foot(wayland):
        # The pointer drawn in (as the test stack's sessions do, tests/wayland.py): both casts show it alike.
        async with native_cast(mutter.CURSOR_EMBEDDED) as (session, native), gst_cast() as ref:
            await poll_until(lambda: full_window(colour_box(native.grab(1), FOOT_BG)), TIMEOUT, interval=0.1)
            box = colour_box(native.grab(1), FOOT_BG)
            assert box is not None
            x, y, w, h = box
            await session.pointer_motion(x + w // 2, y + h // 2)
            for down in (True, False):
                await session.pointer_button(BTN_LEFT, down)
            # Under a full test run's load this headless Mutter has once repainted the whole monitor amid the
            # typing (2.1 Mpx of real change in one buffer): a burst is typed again, three at most, and one
            # burst must come as a few small rectangles.
            problems: list[str] = []
            for keys in ("qwe", "rty", "uio"):
                await settle_same(native, ref)
                native.take()
                frames = native.frames
                for key in keys:
                    await session.tap_keysym(ord(key))
                await poll_until(lambda: native.frames > frames, TIMEOUT)
                damage = await collect_damage(native, time.monotonic() + 1.0)
                area = sum(r.w * r.h for r in damage.rects)
                if damage.full:
                    problems.append("typing was reported as the whole frame")
                elif not damage.rects:
                    problems.append("typing was not reported as damage")
                elif area > 0.02 * 1920 * 1080:
                    problems.append(f"typing damaged {area} px: {damage.rects}")
                elif not all(x - 64 <= r.x and r.x + r.w <= x + w + 64 for r in damage.rects):
                    problems.append(f"damage outside foot's window {box}: {damage.rects}")
                else:
                    break
            else:
                raise AssertionError("; ".join(problems))
            assert native.damage_frames >= 1
            await settle_same(native, ref)


async def test_a_change_of_most_of_the_frame_comes_whole_with_its_damage_and_small_ones_after_it_as_rectangles(
        wayland: MutterHandle) -> None:
    """A fullscreen window appearing changes most of the monitor: the child writes that buffer whole (read straight
    into a frame, no pasting) with the changed tiles as its damage, not ``full``; typing after it comes as
    rectangles pasted onto that frame, and the native frame equals an independent cast each time."""
    async with native_cast(mutter.CURSOR_EMBEDDED) as (session, native), gst_cast() as ref:
        await poll_until(lambda: native.frames >= 1, TIMEOUT)
        await settle_same(native, ref)
        native.take()
        whole = native.whole_damage_frames
        proc = subprocess.Popen([*foot_command(FOOT_BG), "--fullscreen"], env={**wayland.env(), "PS1": "$ "},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await poll_until(lambda: native.whole_damage_frames > whole, TIMEOUT)
            damage = await collect_damage(native, time.monotonic() + 0.5)
            assert not damage.full, "a whole frame with damage was reported as everything"
            assert sum(r.w * r.h for r in damage.rects) > 1920 * 1080 // 2, damage.rects
            await settle_same(native, ref)
            box = colour_box(native.grab(1), FOOT_BG)
            assert box is not None and box[2] * box[3] > 1920 * 1080 // 2, box
            rect_frames = native.damage_frames
            for key in (ord("a"), ord("s")):
                await session.tap_keysym(key)
            await poll_until(lambda: native.damage_frames > rect_frames, TIMEOUT)
            await settle_same(native, ref)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


async def test_a_still_pointer_and_a_repaint_of_the_same_picture_cost_no_frame(wayland: MutterHandle) -> None:
    """Moving the pointer over the bare desktop makes this headless Mutter repaint the whole monitor (software
    cursor); in metadata mode the picture is the same, so the child writes no pixels: no frame, no damage."""
    async with native_cast() as (session, native):
        await poll_until(lambda: native.frames >= 1, TIMEOUT)
        await asyncio.sleep(0.5)  # let the stream's first buffers pass (a settle time, not a synchronization)
        native.take()
        frames, records = native.frames, native.records
        for i in range(10):
            await session.pointer_motion(300 + 30 * i, 300 + 10 * i)
        await poll_until(lambda: native.records > records, TIMEOUT)
        await asyncio.sleep(0.5)
        assert native.frames == frames, "a pointer move changed the picture (the pointer is in the frames?)"
        assert not native.take()


async def test_the_pointer_reaches_the_viewer_as_cursor_messages_and_is_not_in_the_frames(
        wayland: MutterHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """With cursor metadata the viewer gets the pointer's place and image (an I-beam over foot, an arrow over the
    desktop) as cursor messages, and the frames show no pointer where it is."""
    monkeypatch.setenv("HELPLINE_WAYLAND_CURSOR", "metadata")
    with foot(wayland):
        # foot painted before the session starts: on this bare headless Mutter a metadata stream can miss a window's
        # first paint right after its own first frame (README, Wayland, Cursor) — that is not what this test is about.
        async with gst_cast() as look:
            await poll_until(lambda: full_window(colour_box(look.grab(1), FOOT_BG)), TIMEOUT, interval=0.1)
        async with serve_session("control", "") as served, Viewer(served.url) as viewer:
            await poll_until(lambda: full_window(colour_box(viewer.framebuffer, FOOT_BG)), TIMEOUT, interval=0.1)
            box = colour_box(viewer.framebuffer, FOOT_BG)
            assert box is not None
            x, y, w, h = box
            centre, desk = (x + w // 2, y + h // 2), (x + w + 200, y + h + 200)
            assert desk[0] < 1900 and desk[1] < 1060, box
            hotspots = set()
            for px, py in (centre, desk, centre):
                async with asyncio.timeout(TIMEOUT):  # a fresh session may drop its first events: move again
                    while not (viewer.cursor is not None and (viewer.cursor.x, viewer.cursor.y) == (px, py)):
                        await viewer.send_mouse(px, py)
                        with contextlib.suppress(TimeoutError):
                            await poll_until(lambda: viewer.cursor is not None
                                             and (viewer.cursor.x, viewer.cursor.y) == (px, py), 2.0)
                assert viewer.cursor is not None and viewer.cursor.visible
                await poll_until(lambda: viewer.cursor_shape is not None and viewer.cursor_shape.w > 1, TIMEOUT)
                shape = viewer.cursor_shape
                assert shape is not None
                hotspots.add((shape.hot_x, shape.hot_y))
                # The frames carry no pointer: foot's flat background (or the bare desktop) where it is.
                assert pointer_shape(viewer.framebuffer, px, py) is None
            assert len(hotspots) >= 2, f"one pointer image over foot and the desktop: {hotspots}"
    stats = await served.stats
    assert stats.cursor_shapes_sent >= 2 and stats.backend == "wayland-mutter"


async def test_without_the_native_binary_the_gst_launch_reader_still_works(
        wayland: MutterHandle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """HELPLINE_PWCAST=off (as when helpline-pwcast is absent): the session reads frames with gst-launch-1.0, says
    so in one log line, and the viewer gets the screen."""
    monkeypatch.setenv("HELPLINE_PWCAST", "off")
    with caplog.at_level("INFO", logger="agent.screen.wayland.backend"):
        async with serve_session("view", "") as served, Viewer(served.url) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=TIMEOUT)
            names = subprocess.run(["ps", "-o", "comm=", "--ppid", str(os.getpid())],
                                   capture_output=True, text=True, check=False).stdout.split()
            assert "gst-launch-1.0" in names and "helpline-pwcast" not in names
            assert _reader_children()
    lines = [r.getMessage() for r in caplog.records if "PipeWire frames read by" in r.getMessage()]
    assert len(lines) == 1 and "gst-launch-1.0" in lines[0] and "HELPLINE_PWCAST=off" in lines[0]
    stats = await served.stats
    assert stats.updates_sent >= 1 and stats.backend == "wayland-mutter"

