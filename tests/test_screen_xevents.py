"""XEventThread's periodic ``tick``, its lost-connection path and its raw reading (real Xvfb, real X connections);
the packet splitter alone."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from agent.screen.pointer_watch import XPointerWatch
from agent.screen.xdisplay import open_display
from agent.screen.xevents import MAX_PACKET, RawEvents, XEventThread, split_packets
from tests.test_session_helpers import xdotool
from tests.xvfb import start_xvfb


def _packet(kind: int, extra_units: int = 0, fill: int = 0) -> bytes:
    head = bytes([kind, fill, 0, 0]) + extra_units.to_bytes(4, sys.byteorder)
    return head + bytes([fill]) * (24 + 4 * extra_units)


def test_split_packets_takes_whole_packets_and_keeps_a_partial_one() -> None:
    """Events and errors are 32 bytes; replies and XGE generic events (XInput 2) carry their own length;
    the send-event bit does not change a type; a packet cut by the read waits for the rest."""
    event, error = _packet(22, fill=1), _packet(0, fill=2)
    generic, reply = _packet(35, extra_units=3, fill=3), _packet(1, extra_units=1, fill=4)
    sent = _packet(0x80 | 35, extra_units=2, fill=5)  # a generic event sent with XSendEvent
    stream = event + generic + error + reply + sent
    buffer = bytearray(stream[:-10])
    assert split_packets(buffer) == [event, generic, error, reply]
    assert bytes(buffer) == sent[:-10]  # the cut one stays
    buffer += stream[-10:]
    assert split_packets(buffer) == [sent] and not buffer
    assert len(generic) == 44 and len(reply) == 36
    buffer = bytearray(_packet(22)[:31])
    assert split_packets(buffer) == [] and len(buffer) == 31
    huge = bytearray(_packet(1)[:4] + (MAX_PACKET // 4).to_bytes(4, sys.byteorder) + bytes(24))
    with pytest.raises(ValueError, match="out of step"):
        split_packets(huge)


def test_the_pointer_watch_reads_raw_events_and_wakes_on_every_move() -> None:
    """XInput 2 raw motion arrives as generic events read off the socket without python-xlib: each move wakes the
    session, nothing is parsed, and the connection closes cleanly (no reader thread left)."""
    handle = start_xvfb(320, 240)
    watch = XPointerWatch(handle.display)
    woken = threading.Event()
    try:
        assert watch._reader.raw is not None
        watch.start(woken.set)
        for dx in (10, 20, -15):  # relative moves go through XTest (an absolute one may be a warp: no raw event)
            woken.clear()
            xdotool(handle.display, "mousemove_relative", "--", str(dx), "5")
            assert woken.wait(10), f"no wake-up for the move by {dx}"
        thread = watch._reader._thread
    finally:
        watch.close()
        handle.stop()
    assert thread is not None and not thread.is_alive()


def test_tick_runs_without_events_and_wakes_the_session_only_when_it_says() -> None:
    """No X event arrives: the thread still wakes after the time the tick asked for, and notifies on its True."""
    handle = start_xvfb(320, 240)
    reader: XEventThread | None = None
    try:
        ticks: list[float] = []

        def tick() -> tuple[bool, float]:
            ticks.append(time.monotonic())
            return len(ticks) == 3, 0.05

        reader = XEventThread(open_display(handle.display), lambda events: True, "test-tick", tick=tick, tick_s=0.05)
        woken: list[int] = []
        reader.start(lambda: woken.append(len(ticks)))
        deadline = time.monotonic() + 30
        while len(ticks) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(ticks) >= 6
        reader.close()
        assert woken == [3]  # once, right after the tick that returned True
    finally:
        if reader is not None:
            reader.close()  # idempotent
        handle.stop()


@pytest.mark.parametrize(("notify_lost", "raw"), [(True, False), (False, False), (True, True)])
def test_lost_connection_calls_on_lost_once_and_notifies_unless_told_not_to(notify_lost: bool, raw: bool) -> None:
    """The X server goes away: ``on_lost`` runs once and the thread ends; ``notify`` follows only by default.
    Read raw, the end of the stream is the same loss."""
    handle = start_xvfb(320, 240)
    lost: list[str] = []
    woken: list[str] = []

    def on_lost() -> None:
        lost.append(threading.current_thread().name)

    dpy = open_display(handle.display)
    reader = XEventThread(dpy, lambda events: True, "test-lost", on_lost, notify_lost=notify_lost,
                          raw=RawEvents(dpy) if raw else None)
    try:
        reader.start(lambda: woken.append("notify"))
        handle.stop()
        deadline = time.monotonic() + 30
        while not lost and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lost == ["test-lost"]
    finally:
        reader.close()  # joins the thread: whatever it was going to call has been called
        handle.stop()
    assert woken == (["notify"] if notify_lost else [])
