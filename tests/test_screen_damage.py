"""The X DAMAGE source on Xvfb: drawings are reported where they happened, and the server's region is emptied
every ``SUBTRACT_EVERY`` events (not after each: that request cost a fifth of a video frame's report)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from agent.screen.damage import SUBTRACT_EVERY, XDamageSource
from tests.harness import wait_until
from tests.test_session_helpers import paint_picture
from tests.xvfb import XvfbHandle, xvfb_factory  # noqa: F401 - fixture


def _block(value: int, w: int = 32, h: int = 16) -> np.ndarray:
    return np.full((h, w, 4), value, dtype=np.uint8)


async def test_drawings_are_reported_and_the_region_is_emptied_every_few_events(
        xvfb_factory: Callable[..., XvfbHandle], caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """Reports are read raw (python-xlib only sets the connection up) and the raw DamageSubtract is accepted:
    no X error comes back, and drawings go on being reported after it."""
    xvfb = xvfb_factory(320, 240)
    source = XDamageSource(xvfb.display)
    subtracts: list[int] = []
    real_send: Any = source._raw.send

    def counting(request: bytes) -> None:
        subtracts.append(source.reports)
        real_send(request)

    source._raw.send = counting  # type: ignore[method-assign]
    woken = threading.Event()
    source.start(woken.set)
    try:
        paint_picture(xvfb.display, 40, 30, _block(200))
        await wait_until(lambda: source.reports >= 1 and woken.is_set(), timeout=10,
                         what="a damage report for the drawing, and the wake-up after it")
        taken = source.take()
        assert not taken.full and taken.reports >= 1
        assert any(r.x <= 40 and r.y <= 30 and r.x + r.w >= 72 and r.y + r.h >= 46 for r in taken.rects), taken
        assert not source.take()  # taken once
        for i in range(3 * SUBTRACT_EVERY):
            paint_picture(xvfb.display, 8 * (i % 30), 100, _block(i % 250, 8, 8))
        await wait_until(lambda: source.reports >= 3 * SUBTRACT_EVERY + 1, timeout=10, what="every drawing reported")
        await wait_until(lambda: len(subtracts) >= 3, timeout=10, what="three subtracts")
        assert len(subtracts) <= source.reports // SUBTRACT_EVERY  # not after every report
        assert all(later - earlier >= SUBTRACT_EVERY - 1 for earlier, later in itertools.pairwise(subtracts))
        source.take()
        paint_picture(xvfb.display, 200, 180, _block(7, 16, 16))  # after the subtracts: still reported, exactly
        await wait_until(lambda: any(r.x == 200 and r.y == 180 and r.w == 16 and r.h == 16
                                     for r in source.take().rects), timeout=10, what="the drawing after the subtracts")
        assert "X error" not in caplog.text
    finally:
        source.close()


async def test_an_armed_capture_runs_in_the_reader_thread_once_instead_of_the_wake_up(
        xvfb_factory: Callable[..., XvfbHandle]) -> None:  # noqa: F811
    """The session's fast path: an armed job runs in the reader thread with the damage taken, once, and the
    session is not woken for that report; a job taken back in time never runs and the next report wakes it."""
    xvfb = xvfb_factory(320, 240)
    source = XDamageSource(xvfb.display)
    woken: list[int] = []
    ran: list[tuple[str, list[tuple[int, int, int, int]]]] = []
    source.start(lambda: woken.append(source.reports))
    try:
        await wait_until(lambda: source.wait_idle(0), timeout=5, what="the reader idle")
        source.take()
        woken.clear()

        def job(batch: Any) -> None:
            ran.append((threading.current_thread().name, [(r.x, r.y, r.w, r.h) for r in batch.rects]))

        source.arm(job)
        paint_picture(xvfb.display, 40, 30, _block(90))
        await wait_until(lambda: bool(ran), timeout=10, what="the armed job")
        assert source.wait_idle(5) and source.jobs_run == 1
        name, rects = ran[0]
        assert name == "screen-damage" and any(x <= 40 and y <= 30 and x + w >= 72 and y + h >= 46
                                               for x, y, w, h in rects), ran
        assert woken == []  # the job replaced the wake-up
        assert not source.disarm()  # it ran: nothing to take back
        source.arm(job)
        assert source.disarm()  # taken back before any report: it never runs
        paint_picture(xvfb.display, 100, 100, _block(30))
        await wait_until(lambda: bool(woken), timeout=10, what="the wake-up for a report nobody armed for")
        assert source.jobs_run == 1 and len(ran) == 1
    finally:
        source.close()
