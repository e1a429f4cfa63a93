"""The pieces of following a Wayland monitor layout that need no compositor: Mutter's layout answer read,
a new list applied to the cast set between two frames, and a burst of change signals settled.
(The whole of it on a real headless Mutter: tests/test_wayland_hotplug.py.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from dbus_fast import Variant

from agent.screen.capture import Frame
from agent.screen.wayland import hotplug
from agent.screen.wayland.casts import CastSet
from agent.screen.wayland.frames import PipeWireCapture
from agent.screen.wayland.layout import LogicalMonitor, parse_state
from agent.screen.wayland.mutter import StreamInfo


def _monitor(connector: str, w: int, h: int, current: bool = True) -> tuple[object, ...]:
    modes = [(f"{w}x{h}@60", w, h, 60.0, 1.0, [1.0], {"is-current": Variant("b", current)})]
    return ((connector, "MetaVendor", "MetaVirtualMonitor", "0x00"), modes, {})


def _logical(x: int, y: int, scale: float, transform: int, primary: bool, connector: str) -> tuple[object, ...]:
    return (x, y, scale, transform, primary, [(connector, "MetaVendor", "MetaVirtualMonitor", "0x00")], {})


def test_the_layout_is_read_primary_first_turned_and_scaled() -> None:
    state: tuple[Any, ...] = (1, [_monitor("A", 1920, 1080), _monitor("B", 1280, 720), _monitor("C", 3840, 2160),
                 _monitor("D", 800, 600, current=False)],
             [_logical(1920, 0, 1.0, 1, False, "B"), _logical(0, 0, 1.0, 0, False, "A"),
              _logical(2640, 0, 2.0, 0, True, "C"), _logical(5000, 0, 1.0, 0, False, "D")], {})
    assert parse_state(state) == [
        LogicalMonitor("C", 2640, 0, 1920, 1080, True),   # the primary first; scale 2 halves it (logical layout)
        LogicalMonitor("A", 0, 0, 1920, 1080, False),
        LogicalMonitor("B", 1920, 0, 720, 1280, False),   # transform 90°: turned
    ]  # D has no current mode: left out
    physical = (*state[:3], {"layout-mode": Variant("u", 2)})
    assert parse_state(physical)[0] == LogicalMonitor("C", 2640, 0, 3840, 2160, True)


class _Still(PipeWireCapture):
    """A reader that is never started: its frame is black (the cast set's choice of reader is what is tested)."""

    def grab(self, index: int) -> Frame:
        return np.zeros((self._monitor.h, self._monitor.w, 4), dtype=np.uint8)

    def grab_view(self, index: int) -> Frame:
        return self.grab(index)


def _still(s: StreamInfo) -> PipeWireCapture:
    return _Still(s.node_id, s.x, s.y, s.w, s.h)


def test_a_new_list_keeps_the_monitor_shown_or_moves_to_the_primary() -> None:
    a, b = StreamInfo(11, 0, 0, 1280, 720, True, "A"), StreamInfo(12, 1280, 0, 1024, 768, False, "B")
    casts = CastSet([StreamInfo(10, 0, 0, 2304, 768), a, b], _still, selected=2)
    casts.grab(2)
    assert casts.apply_layout(2) == 2  # nothing staged: nothing changes
    notified: list[int] = []
    casts.watch_layout(lambda: notified.append(1))

    c = StreamInfo(13, 2304, 0, 800, 600, False, "C")
    casts.stage([StreamInfo(20, 0, 0, 3104, 768), b, a, c])  # B listed first now (say it became the primary)
    assert notified == [1]
    assert casts.apply_layout(2) == 1  # B, found by its connector
    assert casts.grab(1).shape == (768, 1024, 4) and casts.node_id == 12 and casts.switches == 0  # same reader
    assert [m.w for m in casts.monitors()] == [3104, 1024, 1280, 800]

    casts.stage([StreamInfo(21, 0, 0, 2080, 720), StreamInfo(11, 0, 0, 1280, 720, True, "A"), c])  # B unplugged
    assert casts.apply_layout(1) == 1  # B is gone: the primary (A)
    assert casts.grab(1).shape == (720, 1280, 4) and casts.node_id == 11 and casts.switches == 1

    casts.grab(0)
    casts.stage([a, a])  # C unplugged while all monitors were shown: all monitors (now A alone) again
    assert casts.apply_layout(0) == 0
    casts.grab(0)
    assert casts.node_id == 11
    switches = casts.switches
    casts.stage([a, a], fresh=True)  # a new Mutter session whose stream got the same node id (PipeWire reuses them)
    assert casts.apply_layout(0) == 0
    casts.grab(0)
    assert casts.node_id == 11 and casts.switches == switches + 1  # read by a new reader all the same
    casts.close()


async def test_a_burst_of_change_signals_is_read_once_it_settles() -> None:
    changed = asyncio.Event()

    async def burst(count: int, every: float) -> None:
        for _ in range(count):
            await asyncio.sleep(every)  # the compositor's pace, not synchronization
            changed.set()

    start = time.monotonic()
    changed.set()
    sender = asyncio.create_task(burst(4, 0.1))
    await hotplug.settle(changed)
    took = time.monotonic() - start
    assert 0.4 + hotplug.SETTLE_S <= took < hotplug.MAX_DELAY_S, took  # after the last signal's quiet time
    assert not changed.is_set()
    await sender

    start = time.monotonic()
    storm = asyncio.create_task(burst(1000, 0.05))  # never quiet: read anyway after MAX_DELAY_S
    changed.set()
    await hotplug.settle(changed)
    storm.cancel()
    assert hotplug.MAX_DELAY_S <= time.monotonic() - start < hotplug.MAX_DELAY_S + 1.0
