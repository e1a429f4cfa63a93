"""Every monitor of a Wayland desktop: a real headless Mutter with two virtual monitors (1280x720, 1024x768).

The viewer must get the same monitor list as on X11 (index 0 all monitors, then each, in the
desktop's layout), see exactly what an independent ScreenCast of the chosen monitor shows after a
switch, and reach a native Wayland window on the second monitor with a click and keys (pointer
motion goes through that monitor's stream). A missing compositor fails the tests (tests/wayland.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.screen.capture import Frame
from agent.screen.wayland.casts import NO_NODE, CastSet
from agent.screen.wayland.frames import PipeWireCapture
from agent.screen.wayland.mutter import MutterSession, StreamInfo
from agent.screen.wayland.portal import _parse_start, under
from agent.viewer import Viewer
from tests.test_screen_support import poll_until, serve_session
from tests.test_wayland import FOOT_BG, colour_box
from tests.test_wayland_portal import click_until, switched_on, wait_chooser
from tests.wayland import MutterHandle, adopted_mutter, foot_command

TIMEOUT = 60.0
#: The second foot's background (the first one's is FOOT_BG): colours nothing else on the desktop has.
FOOT2_BG = "#1b3c2a"
FIRST, SECOND = (1280, 720), (1024, 768)


@pytest.fixture
def two_monitors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MutterHandle]:
    """A headless Mutter with two virtual monitors side by side; this process adopts its session."""
    with adopted_mutter(tmp_path, monkeypatch, *FIRST, extra_monitors=(SECOND,)) as handle:
        yield handle


@pytest.fixture
def two_monitors_portal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MutterHandle]:
    """The same two monitors with xdg-desktop-portal(-gnome); this process forces the portal path."""
    with adopted_mutter(tmp_path, monkeypatch, *FIRST, extra_monitors=(SECOND,), portal=True) as handle:
        yield handle


@contextlib.asynccontextmanager
async def onlooker() -> AsyncIterator[tuple[MutterSession, list[PipeWireCapture]]]:
    """The test's own session on both monitors (its own casts read by its own gst-launch children)."""
    session = await MutterSession.open()
    captures = [PipeWireCapture(s.node_id, s.x, s.y, s.w, s.h) for s in session.monitors[1:]]
    try:
        for capture in captures:
            capture.start(lambda: None)
        yield session, captures
    finally:
        for capture in captures:
            await asyncio.to_thread(capture.close)
        await session.close()


async def equal_to(viewer: Viewer, ref: PipeWireCapture, timeout: float = TIMEOUT) -> None:
    """Wait until the viewer's image equals the reference cast exactly (after the lossless refinement)."""
    deadline = time.monotonic() + timeout
    last = -1.0
    while time.monotonic() < deadline:
        expected = (await asyncio.to_thread(ref.grab, 1))[:, :, :3]
        if viewer.framebuffer.shape == expected.shape:
            diff = np.abs(viewer.framebuffer.astype(np.int16) - expected.astype(np.int16))
            if not diff.any():
                return
            last = float(diff.mean())
        await asyncio.sleep(0.1)  # polling interval, not synchronization
    raise AssertionError(f"viewer never equalled the monitor (last mean error {last})")


def foot(env: dict[str, str], background: str, which: str) -> subprocess.Popen[bytes]:
    """A native Wayland terminal whose shell knows which one it is ($WHICH)."""
    return subprocess.Popen(foot_command(background),
                            env={**env, "PS1": "$ ", "WHICH": which}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


async def place_pointer(session: MutterSession, monitor: int, capture: PipeWireCapture) -> None:
    """Put the pointer in the middle of ``monitor`` (Mutter opens new windows on the pointer's monitor).

    A fresh session may drop its first events, so move until the pointer shows on that monitor's cast."""
    target = session.monitors[monitor]
    x, y = target.w // 2, target.h // 2

    def there() -> bool:
        if not capture.frames:
            return False
        patch = capture.grab(1)[y - 2: y + 20, x - 2: x + 20, :3].astype(np.int16)
        return bool((np.abs(patch - patch[-1, -1]).sum(axis=2) > 60).sum() > 20)

    async with asyncio.timeout(TIMEOUT):
        while not there():
            await session.pointer_motion(x, y, target.monitor())
            with contextlib.suppress(TimeoutError):
                await poll_until(there, 1.0, interval=0.1)


async def test_every_monitor_is_listed_switched_to_and_controlled(two_monitors: MutterHandle, tmp_path: Path) -> None:
    """Both monitors and "all" are listed as on X11; after a switch the viewer equals monitor 2's own cast; a click
    on monitor 2 focuses the native window there and keys reach it; "all" shows both; switching back works."""
    out = tmp_path / "typed.txt"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with onlooker() as (hands, (ref1, ref2)):
            # foot "two" opens on monitor 2, then foot "one" on monitor 1, which takes the focus.
            await open_feet(hands, [ref1, ref2], two_monitors.env(), procs)

            async with serve_session("control", "") as served, Viewer(served.url) as viewer:
                await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=TIMEOUT)
                listed = [(m.x, m.y, m.w, m.h, m.primary) for m in viewer.monitors]
                assert listed == [(0, 0, 2304, 768, False), (0, 0, 1280, 720, True), (1280, 0, 1024, 768, False)]
                assert viewer.selected == 1
                await equal_to(viewer, ref1)

                await viewer.select_monitor(2)
                await viewer.wait_for(lambda v: v.selected == 2, timeout=TIMEOUT)
                assert viewer.framebuffer.shape == (768, 1024, 3)
                await equal_to(viewer, ref2)
                box = colour_box(viewer.framebuffer, FOOT2_BG)
                assert box is not None and colour_box(viewer.framebuffer, FOOT_BG) is None
                x, y, w, h = box
                await viewer.click(x + w // 2, y + h // 2)
                await viewer.send_text(f"echo $WHICH > {out}")
                await viewer.press_key("Enter")
                await poll_until(lambda: out.exists() and out.read_text() == "two\n", TIMEOUT)

                await viewer.select_monitor(0)
                await viewer.wait_for(lambda v: v.selected == 0, timeout=TIMEOUT)
                await poll_until(lambda: viewer.framebuffer.shape == (768, 2304, 3)
                                 and colour_box(viewer.framebuffer[:, 1280:], FOOT2_BG) is not None
                                 and colour_box(viewer.framebuffer[:720, :1280], FOOT_BG) is not None, TIMEOUT)

                await viewer.select_monitor(1)
                await viewer.wait_for(lambda v: v.selected == 1, timeout=TIMEOUT)
                await equal_to(viewer, ref1)
                assert colour_box(viewer.framebuffer, FOOT2_BG) is None
        stats = await served.stats
        assert stats.backend == "wayland-mutter" and stats.monitor == 1 and stats.refused_inputs == 0
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


async def open_feet(hands: MutterSession, refs: list[PipeWireCapture], env: dict[str, str],
                    procs: list[subprocess.Popen[bytes]]) -> None:
    """foot "two" on monitor 2 (the pointer is there when it opens), then foot "one" on monitor 1."""
    for monitor, background, which in ((2, FOOT2_BG, "two"), (1, FOOT_BG, "one")):
        ref = refs[monitor - 1]
        await place_pointer(hands, monitor, ref)
        procs.append(foot(env, background, which))
        await poll_until(lambda r=ref, b=background: r.frames > 0 and colour_box(r.grab(1), b) is not None,  # type: ignore[misc]
                         TIMEOUT, interval=0.1)


def ticked(frame: Frame, at: tuple[int, int]) -> bool:
    """The chooser's check mark (dark pixels) at ``at``: that monitor's row is selected."""
    x, y = at
    return bool((frame[y - 6: y + 7, x - 6: x + 7, :3].astype(np.int16).sum(axis=2) < 300).any())


async def test_the_portal_shares_both_monitors_the_person_picked(two_monitors_portal: MutterHandle,
                                                                 tmp_path: Path) -> None:
    """GNOME's chooser (portal-gnome 43) lets the person tick both monitors when Helpline asks for several: Start
    returns two streams, the viewer lists them and "all", a switch shows monitor 2 exactly as its own cast does,
    a click there focuses the native window on monitor 2 and keys reach it; "all" is pasted from both."""
    out = tmp_path / "typed.txt"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with onlooker() as (hands, (ref1, ref2)):
            await open_feet(hands, [ref1, ref2], two_monitors_portal.env(), procs)
            async with serve_session("control", "") as served, Viewer(served.url) as viewer:
                buttons = await wait_chooser(ref1)
                share_x, share_y = buttons["share"]
                # The monitor rows below the heading (the first ticked already); the second row's tick at the right.
                second_row, second_tick = (share_x - 250, share_y + 168), (share_x - 7, share_y + 168)
                assert not ticked(ref1.grab(1), second_tick)
                await click_until(hands, second_row, lambda: ticked(ref1.grab(1), second_tick))
                buttons = await wait_chooser(ref1)  # the rows may have moved the switch
                await click_until(hands, buttons["interaction"], lambda: switched_on(ref1.grab(1)))
                await click_until(hands, buttons["share"], lambda: colour_box(ref1.grab(1), "#3584e4") is None)
                await viewer.wait_for(lambda v: v.stats.updates >= 1 and len(v.monitors) == 3, timeout=TIMEOUT)
                assert not viewer.stats.errors, viewer.stats.errors
                listed = [(m.x, m.y, m.w, m.h) for m in viewer.monitors]
                assert listed[0] == (0, 0, 2304, 768) and sorted(listed[1:]) == [(0, 0, 1280, 720),
                                                                                 (1280, 0, 1024, 768)], listed
                second = listed.index((1280, 0, 1024, 768))
                await viewer.select_monitor(second)
                await viewer.wait_for(lambda v: v.selected == second, timeout=TIMEOUT)
                await equal_to(viewer, ref2)
                box = colour_box(viewer.framebuffer, FOOT2_BG)
                assert box is not None
                x, y, w, h = box
                for _attempt in range(2):  # the click that focuses foot may land before its shell reads
                    await viewer.click(x + w // 2, y + h // 2)
                    await viewer.send_text(f"echo $WHICH > {out}")
                    await viewer.press_key("Enter")
                    with contextlib.suppress(TimeoutError):
                        await poll_until(lambda: out.exists() and out.read_text() == "two\n", 15.0)
                        break
                assert out.exists() and out.read_text() == "two\n", "keys did not reach foot on monitor 2"

                await viewer.select_monitor(0)
                await viewer.wait_for(lambda v: v.selected == 0, timeout=TIMEOUT)
                await poll_until(lambda: viewer.framebuffer.shape == (768, 2304, 3)
                                 and colour_box(viewer.framebuffer[:, 1280:], FOOT2_BG) is not None
                                 and colour_box(viewer.framebuffer[:720, :1280], FOOT_BG) is not None, TIMEOUT)
        stats = await served.stats
        assert stats.backend == "wayland-portal" and stats.refused_inputs == 0
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


async def test_all_monitors_without_an_area_stream_is_pasted_from_each(two_monitors: MutterHandle) -> None:
    """The portal's "all monitors" (no stream shows them all): the monitors' own casts pasted at their places equal
    Mutter's cast of the whole area (within its rendering's rounding), and the gap below the smaller monitor is
    black as Mutter paints it."""
    async with onlooker() as (session, _refs):
        area = session.monitors[0]
        mosaic = CastSet([StreamInfo(NO_NODE, area.x, area.y, area.w, area.h), *session.monitors[1:]], selected=0)
        whole = CastSet(session.monitors, selected=0)
        mosaic.start(lambda: None)
        whole.start(lambda: None)
        try:
            async def same() -> bool:
                a: Frame = await asyncio.to_thread(mosaic.grab, 0)
                b: Frame = await asyncio.to_thread(whole.grab, 0)
                if not a.shape == b.shape == (768, 2304, 4):
                    return False
                # Mutter paints the second monitor's gradient a level or so differently into the area's cast than
                # into the monitor's own (the first one's is identical); a misplaced monitor differs by far more.
                diff = np.abs(a[:, :, :3].astype(np.int16) - b[:, :, :3].astype(np.int16))
                return int(diff.max()) <= 3 and float(diff.mean()) < 0.1

            async with asyncio.timeout(TIMEOUT):
                while not await same():
                    await asyncio.sleep(0.1)  # polling interval, not synchronization
            frame = await asyncio.to_thread(mosaic.grab, 0)
            assert not frame[720:, :1280, :3].any()
            assert mosaic.node_id == NO_NODE and mosaic.frames > 0
        finally:
            await asyncio.to_thread(mosaic.close)
            await asyncio.to_thread(whole.close)


def test_the_portals_streams_and_the_monitor_under_a_point() -> None:
    """Start's answer with two monitors gives two streams; a point of "all monitors" moves the pointer through the
    stream of the monitor under it, a point in a gap through the nearest monitor's nearest pixel."""
    from dbus_fast import Variant

    started = _parse_start({"streams": Variant("a(ua{sv})", [
        (41, {"position": Variant("(ii)", (0, 0)), "size": Variant("(ii)", (1280, 720))}),
        (43, {"position": Variant("(ii)", (1280, 0)), "size": Variant("(ii)", (1024, 768))}),
    ]), "devices": Variant("u", 3)})
    streams = started.all_streams()
    assert [s.node_id for s in streams] == [41, 43] and started.stream.node_id == 41
    assert under(streams, 1300, 10) == (streams[1], 20, 10)
    assert under(streams, 5, 5) == (streams[0], 5, 5)
    assert under(streams, 100, 750) == (streams[0], 100, 719)  # below the smaller monitor: its last row
