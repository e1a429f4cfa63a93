"""A monitor plugged in and removed during a live Wayland session on a real headless Mutter (43.8).

The monitor is plugged in the way a real second client does it: an independent ScreenCast session
calls ``RecordVirtual`` and its consumer (a gst-launch child) negotiates 800x600, upon which Mutter
adds a virtual monitor to the layout (right of the first) and emits ``MonitorsChanged``; stopping that
session removes it. The viewer must get the longer list, select the new monitor, see exactly what
that monitor shows (the virtual stream's own frames are the reference) and put the pointer where it
points; on removal it must get the shorter list and be moved to a monitor that exists, the session
going on. A missing compositor fails the test (tests/wayland.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from agent.screen.capture import Frame
from agent.screen.wayland import hotplug
from agent.screen.wayland.frames import PipeWireCapture
from agent.screen.wayland.layout import current_layout
from agent.screen.wayland.mutter import CURSOR_EMBEDDED, SC_NAME, SC_PATH, SC_SESSION, SC_STREAM, MutterSession, _call
from agent.viewer import Viewer
from tests.test_screen_support import serve_session
from tests.test_wayland import pointer_shape
from tests.test_wayland_monitors import ticked
from tests.test_wayland_portal import chooser, click_until, onlooker, wait_chooser
from tests.wayland import MutterHandle, adopted_mutter

TIMEOUT = 60.0
FIRST = (1280, 720)
PLUGGED = (800, 600)


@pytest.fixture
def one_monitor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MutterHandle]:
    """A headless Mutter with one 1280x720 monitor; this process adopts its session."""
    with adopted_mutter(tmp_path, monkeypatch, *FIRST) as handle:
        yield handle


class Plugged:
    """A virtual monitor another client added; ``capture`` reads what it shows, ``unplug`` removes it."""

    def __init__(self, bus: MessageBus, session_path: str, capture: PipeWireCapture) -> None:
        self.bus, self.session_path, self.capture = bus, session_path, capture

    async def unplug(self) -> None:
        if self.bus.connected:
            with contextlib.suppress(Exception):
                await _call(self.bus, SC_NAME, self.session_path, SC_SESSION, "Stop")
            self.bus.disconnect()
        await asyncio.to_thread(self.capture.close)


@contextlib.asynccontextmanager
async def plugged_monitor(w: int, h: int) -> AsyncIterator[Plugged]:
    """Plug a w×h monitor in through another client's ``RecordVirtual`` (unplugged on the way out)."""
    bus = await MessageBus(bus_type=BusType.SESSION).connect()
    try:
        (session_path,) = await _call(bus, SC_NAME, SC_PATH, SC_NAME, "CreateSession", "a{sv}", [{}])
        (stream_path,) = await _call(bus, SC_NAME, session_path, SC_SESSION, "RecordVirtual", "a{sv}",
                                     [{"cursor-mode": Variant("u", CURSOR_EMBEDDED)}])
        added: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_added(message: Message) -> None:
            if (message.message_type == MessageType.SIGNAL and message.path == stream_path
                    and message.member == "PipeWireStreamAdded" and not added.done()):
                added.set_result(int(message.body[0]))

        bus.add_message_handler(on_added)
        await _call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
                    [f"type='signal',sender='{SC_NAME}',path='{stream_path}',interface='{SC_STREAM}'"])
        await _call(bus, SC_NAME, session_path, SC_SESSION, "Start")
        node = await asyncio.wait_for(added, TIMEOUT)
        # The consumer's caps pick the virtual monitor's size; Mutter adds the monitor once they are negotiated.
        capture = PipeWireCapture(node, 0, 0, w, h)
        capture.start(lambda: None)
    except BaseException:
        bus.disconnect()
        raise
    plugged = Plugged(bus, session_path, capture)
    try:
        yield plugged
    finally:
        await plugged.unplug()


def near(a: Frame, b: Frame) -> bool:
    """Equal but for Mutter's rounding: an area cast and the monitor's own cast differ by a level or so."""
    if a.shape != b.shape:
        return False
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(diff.max()) <= 3 and float(diff.mean()) < 0.1


async def wait_listed(viewer: Viewer, count: int) -> list[tuple[int, int, int, int, bool]]:
    await viewer.wait_for(lambda v: len(v.monitors) == count, timeout=TIMEOUT)
    return [(m.x, m.y, m.w, m.h, m.primary) for m in viewer.monitors]


async def test_a_monitor_plugged_in_and_removed_during_the_session(one_monitor: MutterHandle) -> None:
    """Plugged in: the viewer gets [all, first, new], stays on the first, selects the new one and sees its frames
    with the pointer where the viewer put it; removed: the list shrinks, the viewer is moved to the first monitor
    and frames keep coming."""
    pw, ph = PLUGGED
    async with serve_session("control", "") as served:
        async with Viewer(served.url) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=TIMEOUT)
            assert [(m.w, m.h) for m in viewer.monitors] == [FIRST, FIRST] and viewer.selected == 1

            async with plugged_monitor(pw, ph) as plugged:
                listed = await wait_listed(viewer, 3)
                assert listed == [(0, 0, FIRST[0] + pw, FIRST[1], False), (0, 0, *FIRST, True),
                                  (FIRST[0], 0, pw, ph, False)], listed
                assert viewer.selected == 1  # the monitor shown is still there: the viewer stays on it

                await viewer.select_monitor(2)
                await viewer.wait_for(lambda v: v.selected == 2, timeout=TIMEOUT)
                assert viewer.framebuffer.shape == (ph, pw, 3)
                # Pointer motion goes through the new monitor's stream: the pointer shows where the viewer put it.
                x, y = 400, 300
                deadline = time.monotonic() + TIMEOUT
                while True:
                    await viewer.send_mouse(x, y)
                    reference: Frame = (await asyncio.to_thread(plugged.capture.grab, 1))[:, :, :3]
                    if pointer_shape(reference, x, y) == "arrow" and near(viewer.framebuffer, reference):
                        break
                    assert time.monotonic() < deadline, "the viewer never showed the plugged monitor with the pointer"
                    await asyncio.sleep(0.2)  # polling interval, not synchronization
                assert pointer_shape(viewer.framebuffer, x, y) == "arrow"

                await plugged.unplug()
                listed = await wait_listed(viewer, 2)
                assert listed == [(0, 0, *FIRST, True), (0, 0, *FIRST, True)], listed
                await viewer.wait_for(lambda v: v.selected == 1 and v.framebuffer.shape == (FIRST[1], FIRST[0], 3),
                                      timeout=TIMEOUT)
                updates = viewer.stats.updates
                await viewer.send_mouse(100, 100)  # the session goes on: the pointer's move is a new frame
                await viewer.wait_for(lambda v: v.stats.updates > updates, timeout=TIMEOUT)
        stats = await served.stats
    assert stats.backend == "wayland-mutter" and stats.monitor == 1
    assert "failed" not in stats.end_reason and "compositor closed" not in stats.end_reason, stats.end_reason
    assert stats.refused_inputs == 0


async def pointer_lands(viewer: Viewer, at: tuple[int, int]) -> None:
    """The viewer moves the pointer to ``at`` of the monitor shown until its frames show the arrow there."""
    x, y = at
    async with asyncio.timeout(TIMEOUT):
        while pointer_shape(viewer.framebuffer, x, y) != "arrow":
            await viewer.send_mouse(x, y)
            await asyncio.sleep(0.2)  # polling interval, not synchronization


async def test_a_monitor_there_from_the_start_removed_renews_the_mutter_session(one_monitor: MutterHandle,
                                                                               caplog: pytest.LogCaptureFixture
                                                                               ) -> None:
    """A monitor cast from the session's start (RecordMonitor) is removed while shown: Mutter closes the whole
    remote-desktop session; the agent starts a new one, the viewer gets the shorter list on the first monitor, and
    its pointer moves still land where it points (input through the new session, frames from its stream)."""
    pw, ph = PLUGGED
    caplog.set_level(logging.INFO, logger="agent.screen.wayland.hotplug")
    async with plugged_monitor(pw, ph) as plugged:
        # Mutter adds the monitor a moment after the consumer's negotiation: in the layout before the session starts.
        await poll_async(lambda: layout_size(plugged.bus, 2), TIMEOUT)
        async with serve_session("control", "") as served, Viewer(served.url) as viewer:
            await viewer.wait_for(lambda v: v.stats.updates >= 1 and len(v.monitors) == 3, timeout=TIMEOUT)
            await viewer.select_monitor(2)
            await viewer.wait_for(lambda v: v.selected == 2 and v.framebuffer.shape == (ph, pw, 3), timeout=TIMEOUT)
            await pointer_lands(viewer, (300, 200))
            await plugged.unplug()
            listed = await wait_listed(viewer, 2)
            assert listed == [(0, 0, *FIRST, True), (0, 0, *FIRST, True)], listed
            await viewer.wait_for(lambda v: v.selected == 1 and v.framebuffer.shape == (FIRST[1], FIRST[0], 3),
                                  timeout=TIMEOUT)
            await pointer_lands(viewer, (640, 360))
            await pointer_lands(viewer, (200, 500))
        stats = await served.stats
    assert "went away: starting a new one" in caplog.text  # the monitor was cast from the start: renewed
    assert "the monitor layout changed" not in caplog.text.split("starting a new one")[0]  # no hot-plug before it
    assert stats.backend == "wayland-mutter" and stats.monitor == 1
    assert "failed" not in stats.end_reason and "compositor closed" not in stats.end_reason, stats.end_reason


@pytest.fixture
def one_monitor_portal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MutterHandle]:
    """The same one monitor with xdg-desktop-portal(-gnome); this process forces the portal path."""
    with adopted_mutter(tmp_path, monkeypatch, *FIRST, portal=True) as handle:
        yield handle


async def frames_go_on(viewer: Viewer, hands: MutterSession, at: tuple[int, int]) -> None:
    """The session still runs: the pointer moved on the first monitor (by the test's own session) is a new frame."""
    updates = viewer.stats.updates
    async with asyncio.timeout(TIMEOUT):
        while viewer.stats.updates <= updates:
            await hands.pointer_motion(*at)
            with contextlib.suppress(TimeoutError):
                await viewer.wait_for(lambda v: v.stats.updates > updates, timeout=1.0)


async def test_the_portal_keeps_its_streams_when_another_monitor_comes_and_goes(
        one_monitor_portal: MutterHandle) -> None:
    """Through the portal the streams are the ones the person shared: a monitor plugged in and removed again
    changes neither the viewer's list nor the session, which goes on sending frames."""
    async with onlooker() as (hands, eyes), serve_session("control", "") as served:
        async with Viewer(served.url) as viewer:
            buttons = await wait_chooser(eyes)
            await click_until(hands, buttons["share"], lambda: chooser(eyes.grab(1)) is None)
            await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=TIMEOUT)
            before = [(m.x, m.y, m.w, m.h) for m in viewer.monitors]
            assert before == [(0, 0, *FIRST), (0, 0, *FIRST)]
            async with plugged_monitor(*PLUGGED) as plugged:
                await poll_async(lambda: layout_size(hands.bus, 2), TIMEOUT)
                await frames_go_on(viewer, hands, (200, 200))
                await plugged.unplug()
                await poll_async(lambda: layout_size(hands.bus, 1), TIMEOUT)
                await frames_go_on(viewer, hands, (300, 300))
            assert [(m.x, m.y, m.w, m.h) for m in viewer.monitors] == before and viewer.selected == 1
        stats = await asyncio.wait_for(served.stats, TIMEOUT)
    assert stats.backend == "wayland-portal" and "failed" not in stats.end_reason, stats.end_reason


async def layout_size(bus: MessageBus, count: int) -> bool:
    return len(await current_layout(bus)) == count


async def poll_async(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)  # polling interval, not synchronization


async def test_the_portal_session_ends_when_a_shared_monitor_is_removed(one_monitor_portal: MutterHandle) -> None:
    """A monitor the person shared through the portal is removed: the desktop closes the portal's session (GNOME
    casts each shared monitor with Mutter's RecordMonitor) and the screen session ends, saying so — no hang."""
    async with onlooker() as (hands, eyes), plugged_monitor(*PLUGGED) as plugged:
        await poll_async(lambda: layout_size(hands.bus, 2), TIMEOUT)
        async with serve_session("control", "") as served:
            async with Viewer(served.url) as viewer:
                buttons = await wait_chooser(eyes)
                share_x, share_y = buttons["share"]
                second_row, second_tick = (share_x - 250, share_y + 168), (share_x - 7, share_y + 168)
                await click_until(hands, second_row, lambda: ticked(eyes.grab(1), second_tick))
                buttons = await wait_chooser(eyes)
                await click_until(hands, buttons["share"], lambda: chooser(eyes.grab(1)) is None)
                await viewer.wait_for(lambda v: v.stats.updates >= 1 and len(v.monitors) == 3, timeout=TIMEOUT)
                await plugged.unplug()
                stats = await asyncio.wait_for(served.stats, TIMEOUT)
    assert stats.backend == "wayland-portal"
    assert stats.end_reason.startswith("the compositor closed the remote-desktop session"), stats.end_reason


async def test_a_close_with_no_cast_monitor_gone_ends_the_session(one_monitor: MutterHandle) -> None:
    """Mutter's Closed with every monitor the session cast still there (sharing stopped on the desktop, the
    compositor leaving) is not renewed: the session is closed, as before layouts were followed."""
    session = await MutterSession.open()
    try:
        session.lost.set()  # what Mutter's Closed sets while the layout is followed
        assert await hotplug.renew_or_close(session) is None
        assert session.closed.is_set() and session.renewals == 0
    finally:
        await session.close()
