"""Pictures drawn over FILLs are cut to the pixels that differ from the FILL's colour (agent/screen/_cut.c)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.screen import _cut, cut
from agent.screen.encoder import decode
from agent.screen.pipeline import ScreenPipeline
from agent.screen.tiles import TILE, Rect
from protocol import stream
from protocol.stream import Encoding
from tests.test_screen_flat import Frames, bars


def reference_box(frame: np.ndarray, under: np.ndarray, tile: int, rect: Rect) -> tuple[int, int, int, int] | None:
    """The rule, pixel by pixel: a pixel counts when its tile has no colour under it or it differs from that colour."""
    px = frame.view(np.uint32)[..., 0]
    ys, xs = np.mgrid[rect.y : rect.y + rect.h, rect.x : rect.x + rect.w]
    colour = under[ys // tile, xs // tile]
    differs = (colour < 0) | (px[ys, xs] != colour.astype(np.uint32))
    rows, cols = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    if not len(rows):
        return None
    return rect.x + int(cols[0]), rect.y + int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def test_the_native_cut_is_built() -> None:
    # The test environment installs the package with its C part (scripts/setup.sh): without it video sends
    # every picture whole and costs the device more CPU, which no other test would notice.
    assert cut.AVAILABLE, "agent.screen._cut is missing: reinstall with a C compiler (pip install -e .)"


@settings(max_examples=300, deadline=None)
@given(
    tile=st.sampled_from([4, 8, 16]),
    rows=st.integers(1, 5),
    cols=st.integers(1, 6),
    ragged=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    margin=st.tuples(st.integers(0, 5), st.integers(0, 9)),
    data=st.data(),
)
def test_the_box_is_the_one_the_pixel_rule_gives_on_any_layout(tile: int, rows: int, cols: int,
                                                                ragged: tuple[int, int], margin: tuple[int, int],
                                                                data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    h, w = max(1, rows * tile - ragged[0]), max(1, cols * tile - ragged[1])
    grid = (-(-h // tile), -(-w // tile))
    palette = rng.integers(0, 2**32, size=3, dtype=np.uint64).astype(np.int64)
    under = np.where(rng.random(grid) < 0.2, cut.NO_FILL, palette[rng.integers(0, 3, size=grid)])
    # Each tile shows the colour under it (or a palette colour), with a few pixels of another.
    base = np.where(under < 0, palette[0], under).astype(np.uint32)
    px = np.repeat(np.repeat(base, tile, axis=0), tile, axis=1)[:h, :w]
    for _ in range(data.draw(st.integers(0, 4))):
        px[rng.integers(0, h), rng.integers(0, w)] = rng.integers(0, 2**32, dtype=np.uint64)
    # The frame is a view into a wider one (a monitor of a larger screen): rows longer than the frame.
    screen = np.zeros((h + margin[0], w + margin[1]), dtype=np.uint32)
    screen[margin[0] :, margin[1] :] = px
    frame = screen.view(np.uint8).reshape(h + margin[0], w + margin[1], 4)[margin[0] :, margin[1] :]
    x = data.draw(st.integers(0, w - 1))
    y = data.draw(st.integers(0, h - 1))
    rect = Rect(x, y, data.draw(st.integers(1, w - x)), data.draw(st.integers(1, h - y)))
    got = _cut.differing_box(frame, under, tile, rect.x, rect.y, rect.w, rect.h)
    assert got == reference_box(frame, under, tile, rect)


def test_a_single_differing_pixel_is_found_at_every_position_of_a_wide_row() -> None:
    """Each offset against the 8-pixel blocks the search reads, from either side, in every tile."""
    h, w, colour = 8, 3 * TILE, 0x00336699
    under = np.full((1, 3), colour, dtype=np.int64)
    for x in range(w):
        for y in (0, h // 2, h - 1):
            frame = np.zeros((h, w, 4), dtype=np.uint8)
            frame.view(np.uint32)[...] = colour
            frame[y, x, 1] ^= 0xFF
            assert cut.differing_box(frame, under, Rect(0, 0, w, h)) == Rect(x, y, 1, 1)


def test_a_tile_with_no_fill_under_it_counts_whole_and_a_rectangle_of_its_colour_is_none() -> None:
    frame = np.zeros((TILE, 3 * TILE, 4), dtype=np.uint8)
    frame.view(np.uint32)[...] = 7
    under = np.array([[7, cut.NO_FILL, 7]], dtype=np.int64)
    assert cut.differing_box(frame, under, Rect(0, 0, 3 * TILE, TILE)) == Rect(TILE, 0, TILE, TILE)
    assert cut.differing_box(frame, under, Rect(0, 0, TILE, TILE)) is None
    assert cut.differing_box(frame, under, Rect(2 * TILE + 5, 3, 10, 10)) is None


@pytest.mark.parametrize("bad", [
    "frame_rgb", "frame_columns", "under_shape", "under_dtype", "outside", "empty", "tile",
])
def test_bad_arguments_are_refused_with_an_error_not_a_crash(bad: str) -> None:
    frame = np.zeros((100, 130, 4), dtype=np.uint8)
    under = cut.no_fills((2, 3))
    args: list[object] = [frame, under, TILE, 0, 0, 130, 100]
    if bad == "frame_rgb":
        args[0] = np.zeros((100, 130, 3), dtype=np.uint8)
    elif bad == "frame_columns":
        args[0] = frame[:, ::2]
    elif bad == "under_shape":
        args[1] = cut.no_fills((2, 2))
    elif bad == "under_dtype":
        args[1] = under.astype(np.int32)
    elif bad == "outside":
        args[3:] = [100, 0, 31, 100]
    elif bad == "empty":
        args[3:] = [0, 0, 0, 100]
    else:
        args[2] = 48
    with pytest.raises((ValueError, BufferError)):
        _cut.differing_box(*args)


def _play(frames: list[np.ndarray], monkeypatch: pytest.MonkeyPatch, native: bool) -> tuple[np.ndarray, list[int]]:
    """Step the pipeline through ``frames`` (then the refresh); the viewer's image and each step's JPEG pixels."""
    monkeypatch.setattr(cut, "AVAILABLE", native)
    h, w = frames[0].shape[:2]
    pipe = ScreenPipeline(Frames(*frames, *[frames[-1]] * 3), 1, settle_s=0.3)
    viewer = np.zeros((h, w, 3), dtype=np.uint8)
    jpeg_px = []
    for i in range(len(frames)):
        update = pipe.step(float(i), 90, i).update
        assert update is not None
        parts = [stream.unpack_update(m) for m in update.messages]
        pictured = np.zeros((h, w), dtype=np.bool_)
        for u in parts:
            viewer[u.y : u.y + u.h, u.x : u.x + u.w] = decode(u.encoding, u.payload, u.w, u.h)
            if u.encoding in (Encoding.JPEG, Encoding.JPEG_LEAN):
                pictured[u.y : u.y + u.h, u.x : u.x + u.w] = True
        jpeg_px.append(int(pictured.sum()))
        # Every pixel changed (the hue moves): what no JPEG covers is a FILL or lossless, exact; the rest close.
        screen = frames[i][:, :, :3]
        assert np.array_equal(viewer[~pictured], screen[~pictured]), i
        assert np.abs(viewer[pictured].astype(int) - screen[pictured].astype(int)).mean() < 3, i
    # The still screen: rows taken unread while the hue moved go again, then the lossless refresh.
    for t in (0.5, 5.0, 10.0):
        later = pipe.step(len(frames) + t, 90, len(frames)).update
        for m in later.messages if later is not None else []:
            u = stream.unpack_update(m)
            viewer[u.y : u.y + u.h, u.x : u.x + u.w] = decode(u.encoding, u.payload, u.w, u.h)
    return viewer, jpeg_px


def test_the_picture_over_the_bars_covers_the_stripe_only_and_the_viewer_ends_exact(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Colour bars with a detailed stripe across (rows 100-139, in tile rows 1 and 2), the hue moving: the
    bars go as FILLs and the stripe as a JPEG cut to its 40 rows, not the 128 rows of its tiles."""
    frames = [bars(300, 450, s) for s in (0, 5, 9)]
    viewer, cut_px = _play(frames, monkeypatch, native=True)
    assert np.array_equal(viewer, frames[-1][:, :, :3])
    _, whole_px = _play(frames, monkeypatch, native=False)
    assert cut_px[1:] == [40 * 450, 40 * 450]
    assert whole_px[1:] == [2 * TILE * 450, 2 * TILE * 450]


def test_a_moving_shape_over_the_bars_is_cut_to_its_box_and_matches_the_screen_in_between(
        monkeypatch: pytest.MonkeyPatch) -> None:
    frames = []
    for s in range(4):
        frame = bars(300, 450, 7 * s)
        frame[150 + 9 * s : 170 + 9 * s, 200 + 11 * s : 230 + 11 * s, :3] = (255, 255 - 40 * s, 40 * s)  # a block
        frame[210, 20 + s : 400, :3] = 30  # a line
        frames.append(frame)
    viewer, cut_px = _play(frames, monkeypatch, native=True)
    assert np.array_equal(viewer, frames[-1][:, :, :3])
    _, whole_px = _play(frames, monkeypatch, native=False)
    assert all(c < wh for c, wh in zip(cut_px[1:], whole_px[1:], strict=True))
