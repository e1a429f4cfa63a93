"""XEventThread's periodic ``tick`` and its lost-connection path (real Xvfb, real X connections)."""

from __future__ import annotations

import threading
import time

import pytest

from agent.screen.xdisplay import open_display
from agent.screen.xevents import XEventThread
from tests.xvfb import start_xvfb


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


@pytest.mark.parametrize("notify_lost", [True, False])
def test_lost_connection_calls_on_lost_once_and_notifies_unless_told_not_to(notify_lost: bool) -> None:
    """The X server goes away: ``on_lost`` runs once and the thread ends; ``notify`` follows only by default."""
    handle = start_xvfb(320, 240)
    lost: list[str] = []
    woken: list[str] = []

    def on_lost() -> None:
        lost.append(threading.current_thread().name)

    reader = XEventThread(open_display(handle.display), lambda events: True, "test-lost", on_lost,
                          notify_lost=notify_lost)
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
