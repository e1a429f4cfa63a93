"""Flat tiles of a large change go as FILL; a frame changed everywhere skips the full comparison."""

from __future__ import annotations

import numpy as np

from agent.screen import Monitor
from agent.screen.encoder import decode
from agent.screen.pipeline import ScreenPipeline
from agent.screen.tiles import TILE, Rect, compare, compare_rows, fill_cover, rows_changed_everywhere, uniform_tiles
from protocol import stream
from protocol.stream import Encoding


class Frames:
    def __init__(self, *frames: np.ndarray) -> None:
        self.frames = list(frames)

    def monitors(self) -> list[Monitor]:
        h, w = self.frames[0].shape[:2]
        return [Monitor(0, 0, w, h), Monitor(0, 0, w, h, True)]

    def grab(self, index: int) -> np.ndarray:
        return self.frames.pop(0).copy()

    def grab_region(self, index: int, rect: Rect) -> np.ndarray:
        return self.frames.pop(0)[rect.y : rect.y + rect.h, rect.x : rect.x + rect.w].copy()

    def close(self) -> None:
        pass


def bars(h: int, w: int, shift: int) -> np.ndarray:
    """Vertical colour bars 3 tiles wide (colours moved by ``shift``) with a colour ramp across."""
    frame = np.zeros((h, w, 4), dtype=np.uint8)
    for i, x in enumerate(range(0, w, 3 * TILE)):
        frame[:, x : x + 3 * TILE, :3] = ((40 * i + shift) % 256, (90 + shift) % 256, (200 - 30 * i) % 256)
    ramp = (np.arange(w) * 255 // max(w - 1, 1) + shift) % 256  # a stripe with detail, across the bars
    frame[100:140, :, 0] = ramp.astype(np.uint8)
    frame[100:140, :, 1] = 255 - ramp.astype(np.uint8)
    frame[100:140, :, 2] = 128
    return frame


def test_uniform_tiles_finds_exactly_the_one_colour_tiles_on_ragged_edges() -> None:
    frame = bars(300, 450, 0)  # 5 x 8 tiles, the last row and column cut short
    frame[280, 449, 0] ^= 1  # one pixel in the bottom-right (partial) tile
    rows, cols = 5, 8
    flat, colours = uniform_tiles(frame, np.ones((rows, cols), dtype=np.bool_))
    px = frame.view(np.uint32)[..., 0]
    for r in range(rows):
        for c in range(cols):
            tile = px[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
            assert flat[r, c] == bool((tile == tile[0, 0]).all()), (r, c)
    assert not flat[1].any() and not flat[2].any()  # the noisy stripe (rows 100..139)
    assert flat[0].all() and flat[3].all() and not flat[4, 7] and flat[4, :7].all()
    only = np.zeros((rows, cols), dtype=np.bool_)
    only[0, 2] = True
    assert uniform_tiles(frame, only)[0].sum() == 1  # candidates limit the answer
    runs = fill_cover(flat, colours, 450, 300)
    covered = np.zeros((300, 450), dtype=np.int32)
    for rect, colour in runs:
        covered[rect.y : rect.y + rect.h, rect.x : rect.x + rect.w] += 1
        assert (px[rect.y : rect.y + rect.h, rect.x : rect.x + rect.w] == colour).all()
    expected = np.kron(flat, np.ones((TILE, TILE), dtype=np.int32))[:300, :450]
    assert np.array_equal(covered, expected)  # every flat tile once, nothing else
    assert len(runs) < int(flat.sum())  # equal-colour runs merged and stacked


def test_uniform_tiles_agrees_with_a_pixel_by_pixel_check_on_random_layouts() -> None:
    rng = np.random.default_rng(13)
    for h, w in ((300, 450), (256, 512), (130, 77)):
        rows, cols = -(-h // TILE), -(-w // TILE)
        for _ in range(5):
            # Each tile one colour, a third of them with one pixel off somewhere (first row included).
            colours = rng.integers(0, 1 << 24, (rows, cols), dtype=np.uint32)
            px = np.kron(colours, np.ones((TILE, TILE), dtype=np.uint32))[:h, :w].copy()
            for r, c in np.argwhere(rng.random((rows, cols)) < 0.33):
                y = min(r * TILE + int(rng.integers(0, TILE)), h - 1)
                x = min(c * TILE + int(rng.integers(0, TILE)), w - 1)
                px[y, x] ^= 1
            frame = px.view(np.uint8).reshape(h, w, 4)
            candidates = rng.random((rows, cols)) < 0.7
            flat, _ = uniform_tiles(frame, candidates)
            for r in range(rows):
                for c in range(cols):
                    tile = px[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
                    assert flat[r, c] == (candidates[r, c] and bool((tile == tile[0, 0]).all())), (h, w, r, c)


def test_fill_cover_spans_the_wildcards_but_nothing_else() -> None:
    flat = np.array([[1, 1, 0, 1], [0, 0, 0, 1], [1, 1, 0, 1]], dtype=np.bool_)
    colours = np.array([[7, 7, 0, 9], [0, 0, 0, 9], [7, 7, 0, 9]], dtype=np.uint32)
    wildcard = np.array([[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=np.bool_)
    runs = fill_cover(flat, colours, 4 * TILE, 3 * TILE, wildcard)
    assert sorted((r.x // TILE, r.y // TILE, r.w // TILE, r.h // TILE, c) for r, c in runs) == [
        (0, 0, 2, 3, 7), (3, 0, 1, 3, 9)]  # column 2 (neither flat nor wildcard) is never covered
    assert len(fill_cover(flat, colours, 4 * TILE, 3 * TILE)) == 3  # without wildcards: rows 0 and 2 apart


def test_rows_changed_everywhere_skip_the_comparison_and_agree_with_it() -> None:
    a, b = bars(300, 450, 0), bars(300, 450, 7)
    assert rows_changed_everywhere(a, b).all()
    c = b.copy()
    c[256:300, 448:450] = a[256:300, 448:450]  # the partial corner tile unchanged
    c[0:64, 64:128] = a[0:64, 64:128]  # and one tile of the first row
    assert rows_changed_everywhere(a, c).tolist() == [False, True, True, True, False]
    full_mask, full_diff = compare(a, c)
    assert full_mask.sum() == full_mask.size - 2
    mask, diff = compare_rows(a, c, rows_changed_everywhere(a, c))
    assert np.array_equal(mask, full_mask)
    for r in range(5):
        for col in range(8):
            rect = Rect(col * TILE, r * TILE, min(TILE, 450 - col * TILE), min(TILE, 300 - r * TILE))
            assert diff.bounds(rect) == full_diff.bounds(rect), (r, col)


def test_rows_changed_everywhere_reads_each_tiles_middle_row_on_any_layout() -> None:
    """Strided in-place reads where every middle row exists, gathered rows where a short last tile row has none
    (its last row then), on views cut out of larger frames too: the answer is always the per-tile rule."""
    rng = np.random.default_rng(5)
    for h, w in [(1080, 1920), (300, 450), (70, 130), (64, 64), (33, 200), (1030, 700)]:
        big = rng.integers(0, 256, (h + 9, w + 13, 4), dtype=np.uint8)
        sent = big[4 : 4 + h, 6 : 6 + w]
        current = sent.copy()
        changed = rng.random(h) < 0.5
        current[changed] ^= 1
        rows = -(-h // TILE)
        middles = [min(r * TILE + TILE // 2, h - 1) for r in range(rows)]
        expected = [bool(changed[y]) for y in middles]  # a changed pixel row changes every tile it crosses
        assert rows_changed_everywhere(sent, current).tolist() == expected, (h, w)
        current[middles[0], : min(TILE, w)] = sent[middles[0], : min(TILE, w)]  # the first tile's sample kept
        expected[0] = False
        assert rows_changed_everywhere(sent, current).tolist() == expected, (h, w)


def test_a_changing_picture_sends_flat_tiles_as_fill_and_the_viewer_matches() -> None:
    frames = [bars(300, 450, s) for s in (0, 5, 9)]
    frames[2][0:64, 0:64, :3] = frames[1][0:64, 0:64, :3]  # one tile unchanged: the full comparison
    pipe = ScreenPipeline(Frames(*frames), 1)
    viewer = np.zeros((300, 450, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        update = pipe.step(float(i), 90, i).update
        assert update is not None
        parts = [stream.unpack_update(m) for m in update.messages]
        for u in parts:
            viewer[u.y : u.y + u.h, u.x : u.x + u.w] = decode(u.encoding, u.payload, u.w, u.h)
        fills = [u for u in parts if u.encoding is Encoding.FILL]
        jpeg = sum(u.w * u.h for u in parts if u.encoding is Encoding.JPEG)
        exact = np.ones((300, 450), dtype=np.bool_)
        exact[64:192] = False  # tile rows 1 and 2 hold the stripe
        if i:
            # Each bar is one FILL across the stripe (drawn first), the stripe's tiles one JPEG over it.
            assert len(fills) <= 3 + 2 * (i == 2) and parts[-1].encoding is Encoding.JPEG  # (2: a still tile)
            assert jpeg <= 2 * 64 * 450
        assert np.array_equal(viewer[exact], frame[:, :, :3][exact]), i
        error = np.abs(viewer[~exact].astype(int) - frame[:, :, :3][~exact].astype(int))
        assert error.mean() < 3, i  # the JPEG replaced every FILL under it


def test_rows_sent_without_a_copy_are_sent_whole_once_the_motion_stops_and_end_exact() -> None:
    """A frame changed everywhere is encoded from the capture and not copied; when the picture
    stops, the next grab sends those rows again (it cannot compare them), then the lossless
    refresh leaves the viewer equal to the screen."""
    a, b = bars(300, 450, 0), bars(300, 450, 5)
    pipe = ScreenPipeline(Frames(a, b, b, b, b), 1, settle_s=0.3)
    viewer = np.zeros((300, 450, 3), dtype=np.uint8)

    def step(t: float) -> int:
        update = pipe.step(t, 70, int(t * 10)).update
        if update is None:
            return 0
        for m in update.messages:
            u = stream.unpack_update(m)
            viewer[u.y : u.y + u.h, u.x : u.x + u.w] = decode(u.encoding, u.payload, u.w, u.h)
        return len(update.messages)

    assert step(0.0) and step(0.1)  # the first frame, then b changed everywhere
    assert step(0.2)  # b again: the rows left uncopied go once more, whole
    assert step(0.25) == 0  # now compared: nothing changed, nothing due yet
    assert step(5.0)  # the refresh of the JPEG tiles
    assert np.array_equal(viewer, b[:, :, :3])


def test_rows_not_copied_are_taken_as_they_are_when_no_damage_touched_them() -> None:
    """The picture stopped and the display reported no damage since: the uncopied rows still show
    what was sent, so nothing goes again before the refresh, which ends exact."""
    a, b = bars(300, 450, 0), bars(300, 450, 5)
    pipe = ScreenPipeline(Frames(a, b, b, b), 1, settle_s=0.3)
    viewer = np.zeros((300, 450, 3), dtype=np.uint8)
    everything = [Rect(0, 0, 450, 300)]

    def step(t: float, damage: list[Rect] | None) -> int:
        update = pipe.step(t, 70, int(t * 10), damage).update
        if update is None:
            return 0
        for m in update.messages:
            u = stream.unpack_update(m)
            viewer[u.y : u.y + u.h, u.x : u.x + u.w] = decode(u.encoding, u.payload, u.w, u.h)
        return len(update.messages)

    assert step(0.0, None) and step(0.1, everything)  # b changed everywhere: its rows are not copied
    assert step(0.2, []) == 0  # no damage since: taken as they are, nothing sent
    assert step(5.0, [])  # the refresh
    assert np.array_equal(viewer, b[:, :, :3])


def test_fill_cover_on_random_masks_covers_each_flat_tile_once_in_its_colour() -> None:
    rng = np.random.default_rng(7)
    for case in range(400):
        rows, cols = int(rng.integers(1, 18)), int(rng.integers(1, 31))
        flat = rng.random((rows, cols)) < rng.random()
        colours = rng.integers(0, 3, (rows, cols)).astype(np.uint32)
        wildcard = (rng.random((rows, cols)) < rng.random()) & ~flat if case % 2 else None
        width, height = cols * TILE - 5, rows * TILE - 7  # a short last column and row
        covered = np.zeros((rows, cols), dtype=np.int64)
        for rect, colour in fill_cover(flat, colours, width, height, wildcard):
            assert rect.x + rect.w <= width and rect.y + rect.h <= height
            rs = slice(rect.y // TILE, -(-(rect.y + rect.h) // TILE))
            cs = slice(rect.x // TILE, -(-(rect.x + rect.w) // TILE))
            under = flat[rs, cs]
            allowed = under | (wildcard[rs, cs] if wildcard is not None else False)
            assert allowed.all(), case  # only flat tiles, or tiles drawn over afterwards
            assert (colours[rs, cs][under] == colour).all(), case  # one colour for every flat tile under it
            assert under[:, -1].any() and under[-1, :].any(), case  # no wildcard-only last column or row
            covered[rs, cs] += under
        assert (covered == flat).all(), case  # every flat tile once, nothing else counted
