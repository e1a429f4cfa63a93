"""Two XShm segments written in turn: the capture becomes the last-sent frame without a copy (real Xvfb)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from agent.screen.capture import MssGrabber, PairedViewGrabber
from agent.screen.encoder import decode
from agent.screen.pipeline import ScreenPipeline
from protocol import stream
from tests.test_session_helpers import paint_picture
from tests.xvfb import XvfbHandle, xvfb_factory  # noqa: F401 - fixture

W, H = 640, 480


def _block(colour: tuple[int, int, int], w: int = 96, h: int = 64) -> np.ndarray:
    bgrx = np.zeros((h, w, 4), dtype=np.uint8)
    bgrx[..., 0], bgrx[..., 1], bgrx[..., 2] = colour[2], colour[1], colour[0]
    return bgrx


def _draw(viewer: np.ndarray, messages: list[bytes]) -> None:
    for message in messages:
        u = stream.unpack_update(message)
        viewer[u.y : u.y + u.h, u.x : u.x + u.w] = decode(u.encoding, u.payload, u.w, u.h)


def _screen(grabber: MssGrabber) -> np.ndarray:
    return grabber.grab(0)[:, :, :3].copy()


@pytest.fixture
def primed(xvfb_factory: Callable[..., XvfbHandle]) -> Iterator[tuple[XvfbHandle, MssGrabber, ScreenPipeline, np.ndarray]]:  # noqa: F811
    """A one-colour screen, its grabber past mss's first grab, a pipeline that has sent it, and the viewer's image."""
    xvfb = xvfb_factory(W, H)
    grabber = MssGrabber(xvfb.display)
    try:
        paint_picture(xvfb.display, 0, 0, _block((32, 48, 64), W, H))  # not X's stipple: every update exact
        grabber.grab_view(0)
        pipeline = ScreenPipeline(grabber, 0)
        first = pipeline.step(0.0, 75, 0, None)
        assert first.update is not None
        viewer = np.zeros((H, W, 3), dtype=np.uint8)
        _draw(viewer, first.update.messages)
        yield xvfb, grabber, pipeline, viewer
    finally:
        grabber.close()


def test_the_two_segments_take_turns_and_a_lent_frame_survives_the_next_grab(xvfb_factory: Callable[..., XvfbHandle]) -> None:  # noqa: F811
    xvfb: XvfbHandle = xvfb_factory(W, H)
    grabber = MssGrabber(xvfb.display)
    try:
        assert isinstance(grabber, PairedViewGrabber)
        grabber.grab_view(0)  # mss proves XShm with its own grab first
        paint_picture(xvfb.display, 0, 0, _block((255, 0, 0)))
        first = grabber.grab_view(0)
        assert grabber.keeps_view(first)
        red = first[10, 10, :3].copy()
        paint_picture(xvfb.display, 0, 0, _block((0, 0, 255)))
        second = grabber.grab_view(0)
        assert grabber.keeps_view(second) and not np.may_share_memory(first, second)
        assert (first[10, 10, :3] == red).all() and tuple(red) == (0, 0, 255)  # BGR of red: still there
        assert tuple(second[10, 10, :3]) == (255, 0, 0)  # the blue drawn since
        assert not grabber.keeps_view(second.copy())
        third = grabber.grab_view(0)
        assert np.may_share_memory(first, third)  # the first segment again
    finally:
        grabber.close()


def test_the_pipeline_keeps_the_capture_itself_and_the_viewer_stays_exact(
        primed: tuple[XvfbHandle, MssGrabber, ScreenPipeline, np.ndarray]) -> None:
    xvfb, grabber, pipeline, viewer = primed
    seq = 0
    # Changes in turn on two places: a comparison against the wrong segment would miss one of them.
    places = [(0, 0), (320, 240), (0, 0), (320, 240), (100, 300)]
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    for n, ((x, y), colour) in enumerate(zip(places, colours, strict=True)):
        paint_picture(xvfb.display, x, y, _block(colour))
        seq += 1
        result = pipeline.step(0.1 * (n + 1), 75, seq, None)
        assert result.update is not None, n
        _draw(viewer, result.update.messages)
        assert (viewer == _screen(grabber)).all(), n  # one-colour blocks go as FILL: exact
        assert grabber.keeps_view(pipeline._sent)  # type: ignore[arg-type]  # the capture itself, not a copy
    seq += 1
    assert pipeline.step(1.0, 75, seq, None).update is None  # nothing changed: nothing sent


def test_a_last_frame_written_over_is_sent_again_whole(
        primed: tuple[XvfbHandle, MssGrabber, ScreenPipeline, np.ndarray]) -> None:
    xvfb, grabber, pipeline, viewer = primed
    assert pipeline.step(0.1, 75, 1, None).update is None  # adopted: _sent is now a segment
    grabber.grab_view(0)  # a grab the pipeline never saw (a step that failed after grabbing)
    paint_picture(xvfb.display, 192, 128, _block((255, 0, 255), 128, 64))  # whole tiles: FILL, exact
    third = pipeline.step(0.2, 75, 2, None)  # into _sent's own segment: it starts over
    assert third.update is not None
    assert third.dirty_count == -(-W // 64) * -(-H // 64)  # every tile, not the block alone
    _draw(viewer, third.update.messages)
    assert (viewer == _screen(grabber)).all()
