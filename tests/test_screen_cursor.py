"""Cursor shapes: XFixes cursor images sent as CURSOR_SHAPE when they change (real Xvfb + Tk)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from agent.screen import CursorImage, run_screen_session
from agent.screen.cursor_shape import argb_to_rgba, open_cursor_shapes
from agent.viewer import Viewer
from protocol import stream
from tests.test_screen_support import serve_session
from tests.test_screen_units import FakeGrabber, MemoryTunnel, frame
from tests.xvfb import XvfbHandle, start_xvfb

#: Left half of the window shows the I-beam, right half the hand; below it the root cursor.
TK_CURSORS = r"""
import tkinter as tk
root = tk.Tk()
root.geometry("400x200+0+0")
tk.Frame(root, width=200, height=200, cursor="xterm", bg="#804020").place(x=0, y=0)
tk.Frame(root, width=200, height=200, cursor="hand2", bg="#204080").place(x=200, y=0)
root.after(50, lambda: (root.update(), print("ready", flush=True)))
root.mainloop()
"""


@pytest.fixture
def xvfb() -> Iterator[XvfbHandle]:
    """A 640x480 Xvfb for one test, killed by PID afterwards."""
    handle = start_xvfb(640, 480)
    yield handle
    handle.stop()


@contextlib.asynccontextmanager
async def cursor_window(display: str) -> AsyncIterator[None]:
    """The two-cursor Tk window on ``display``; killed by PID on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", TK_CURSORS, stdout=subprocess.PIPE, env={**os.environ, "DISPLAY": display},
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(15):
            assert (await proc.stdout.readline()).strip() == b"ready"
        yield
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()


def move(xvfb: XvfbHandle, x: int, y: int) -> None:
    subprocess.run(["xdotool", "mousemove", str(x), str(y)], env=xvfb.env(), check=True, timeout=5)


async def pointer_at(viewer: Viewer, x: int, y: int, shapes: int) -> None:
    """Wait until the viewer has the position (x, y) and exactly ``shapes`` shapes so far (or more: fails)."""
    await viewer.wait_for(
        lambda v: v.cursor is not None and (v.cursor.x, v.cursor.y) == (x, y) and v.stats.cursor_shapes >= shapes,
        timeout=5,
    )
    assert viewer.stats.cursor_shapes == shapes


def argb(a: int, r: int, g: int, b: int) -> int:
    return (a << 24) | (r << 16) | (g << 8) | b


def test_argb_to_rgba_unpremultiplies() -> None:
    """Premultiplied ARGB becomes straight-alpha RGBA; fully transparent pixels become zero."""
    pixels = np.array([argb(255, 10, 20, 30), argb(128, 128, 0, 64), argb(0, 0, 0, 0)], dtype=np.uint64)
    rgba = argb_to_rgba(pixels, 3, 1)
    assert rgba == bytes([10, 20, 30, 255, 255, 0, 127, 128, 0, 0, 0, 0])


def test_no_display_means_no_shapes() -> None:
    """Where XFixes cannot be used (here: no such display) the source is None, so no shapes are sent."""
    assert open_cursor_shapes(":4711") is None


class ScriptedShapes:
    """A CursorShapeSource returning a scripted sequence, then None."""

    def __init__(self, *shapes: CursorImage | None) -> None:
        self.shapes = list(shapes)
        self.closed = False

    def changed_shape(self) -> CursorImage | None:
        return self.shapes.pop(0) if self.shapes else None

    def close(self) -> None:
        self.closed = True


class FixedPointer:
    def position(self) -> tuple[int, int] | None:
        return (5, 6)

    def close(self) -> None:
        pass


async def test_session_sends_shape_before_position() -> None:
    """A changed shape goes out as one binary CURSOR_SHAPE (hotspot in x/y) before the cursor position."""
    tunnel = MemoryTunnel()
    shape = CursorImage(2, 3, 1, 2, bytes(range(24)), serial=9)
    task = asyncio.create_task(run_screen_session(
        tunnel, mode="view", grabber=FakeGrabber(frame()), pointer=FixedPointer(),  # type: ignore[arg-type]
        cursor_shapes=ScriptedShapes(shape)))
    seen: list[object] = []
    async with asyncio.timeout(5):
        while not any(isinstance(m, stream.Cursor) for m in seen):
            data = await tunnel.from_agent.get()
            if isinstance(data, bytes):
                update = stream.unpack_update(data)
                if update.kind is stream.Kind.CURSOR_SHAPE:
                    seen.append(update)
            elif isinstance(message := stream.decode_text(data), stream.Cursor):
                seen.append(message)
    await tunnel.to_agent.put(None)
    stats = await asyncio.wait_for(task, 5)
    first = seen[0]
    assert isinstance(first, stream.Update) and isinstance(seen[1], stream.Cursor)
    assert (first.w, first.h, first.x, first.y, first.payload) == (2, 3, 1, 2, shape.rgba)
    assert stats.cursor_shapes_sent == 1


async def test_cursor_shape_follows_tk_cursors_and_is_sent_only_on_change(xvfb: XvfbHandle) -> None:
    """Root, I-beam and hand cursors arrive as distinct shapes; moving within one cursor re-sends nothing."""
    move(xvfb, 500, 400)
    async with cursor_window(xvfb.display), serve_session("view", xvfb.display) as served:
        async with Viewer(served.url) as viewer:
            await pointer_at(viewer, 500, 400, shapes=1)
            root = viewer.cursor_shape
            assert root is not None and len(root.rgba) == root.w * root.h * 4

            move(xvfb, 100, 100)
            await pointer_at(viewer, 100, 100, shapes=2)
            ibeam = viewer.cursor_shape
            assert ibeam is not None and (ibeam.w, ibeam.h) != (root.w, root.h)

            move(xvfb, 300, 100)
            await pointer_at(viewer, 300, 100, shapes=3)
            hand = viewer.cursor_shape
            assert hand is not None and (hand.hot_x, hand.hot_y) != (ibeam.hot_x, ibeam.hot_y)
            assert hand.rgba != ibeam.rgba

            for x, y in ((320, 110), (340, 130), (390, 190), (210, 5)):
                move(xvfb, x, y)
                await pointer_at(viewer, x, y, shapes=3)

            move(xvfb, 150, 150)
            await pointer_at(viewer, 150, 150, shapes=4)
            again = viewer.cursor_shape
            assert again is not None and (again.w, again.h, again.hot_x, again.hot_y, again.rgba) == (
                ibeam.w, ibeam.h, ibeam.hot_x, ibeam.hot_y, ibeam.rgba)
            assert viewer.stats.updates >= 1  # shapes do not disturb the frame stream or its acks
        stats = await served.stats
    assert stats.cursor_shapes_sent == 4
