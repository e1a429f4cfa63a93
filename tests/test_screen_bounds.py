"""Diff.bounds' shortcuts (per-tile-column rows, the comparison's tile-row band) against brute force.

The fifth pass of issue 13 cut a motion frame's ~20 rectangles to their changed pixels from
small precomputed arrays instead of one reduction per pixel row; the boxes must stay exactly
what the whole per-word difference says, on every layout (even and odd widths, partial tiles).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.screen.tiles import TILE, Diff, Rect, compare, compare_rows, merge_tiles, rows_changed_everywhere


def brute(changed: npt.NDArray[np.bool_], per_word: int, rect: Rect) -> Rect | None:
    """The box of ``changed`` inside ``rect`` in whole words, clipped to ``rect`` (the contract)."""
    c0, c1 = rect.x // per_word, -(-(rect.x + rect.w) // per_word)
    sub = changed[rect.y : rect.y + rect.h, c0:c1]
    ys, xs = np.nonzero(sub)
    if not len(ys):
        return None
    x0 = max(rect.x, (c0 + int(xs.min())) * per_word)
    x1 = min(rect.x + rect.w, (c0 + int(xs.max()) + 1) * per_word)
    return Rect(x0, rect.y + int(ys.min()), x1 - x0, int(ys.max() - ys.min()) + 1)


def test_bounds_match_brute_force_on_every_layout() -> None:
    rng = np.random.default_rng(13)
    for width, height in ((1920, 1080), (640, 200), (450, 300), (199, 130)):
        sent = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        current = sent.copy()
        for _ in range(40):  # scattered small changes, some straddling tile edges
            y, x = int(rng.integers(0, height - 3)), int(rng.integers(0, width - 3))
            current[y : y + 3, x : x + 3, int(rng.integers(0, 4))] ^= 0x5A
        mask, diff = compare(sent, current)
        plain = Diff(diff.changed, diff.per_word)  # no band: the reference path for columns
        rects = merge_tiles(mask, width, height)
        rects += [Rect(x * TILE, y * TILE, min(TILE, width - x * TILE), min(TILE, height - y * TILE))
                  for y in range(-(-height // TILE)) for x in range(-(-width // TILE))]
        rects += [Rect(5, 7, min(300, width - 5), min(90, height - 7)), Rect(0, 0, width, height)]
        assert len(rects) > 10
        for rect in rects:
            expected = brute(diff.changed, diff.per_word, rect)
            assert diff.bounds(rect) == expected, (width, rect)
            assert plain.bounds(rect) == expected, (width, rect)


def test_bounds_after_a_partial_comparison_match_the_full_one() -> None:
    """compare_rows (rows changed everywhere not read) keeps a band the shortcuts can use."""
    rng = np.random.default_rng(5)
    sent = rng.integers(0, 256, (300, 640, 4), dtype=np.uint8)
    current = sent.copy()
    current[0:128] ^= 1  # two tile rows changed everywhere
    current[200:205, 70:75, 0] ^= 1
    skip = rows_changed_everywhere(sent, current)
    assert skip.tolist()[:3] == [True, True, False]
    mask, diff = compare_rows(sent, current, skip)
    for rect in merge_tiles(mask, 640, 300):
        assert diff.bounds(rect) == brute(diff.changed, diff.per_word, rect), rect
