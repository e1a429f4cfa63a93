"""Which parts of the screen changed: 64-px tile comparison and rectangle merging.

The comparison is against the state *sent* to the viewer, not the previous capture,
so frames skipped under flow control are never needed later: whatever differs from
what the viewer has is simply sent next time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

TILE = 64

Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h


def tile_grid(width: int, height: int, tile: int = TILE) -> tuple[int, int]:
    """(rows, cols) of tiles covering a width x height frame."""
    return -(-height // tile), -(-width // tile)


@dataclass(slots=True)
class Diff:
    """Which words of each pixel row differ: ``changed[y, i]`` covers pixels i*per_word .. +per_word.

    ``band`` (when the comparison kept it) is ``changed`` OR-ed over each tile row's pixel rows:
    :meth:`bounds` of a rectangle of whole tile rows takes its columns from there, one small
    row instead of a second reduction over the rectangle (a motion frame cuts ~20 of them).
    """

    changed: npt.NDArray[np.bool_]
    per_word: int
    band: npt.NDArray[np.bool_] | None = None
    tile: int = TILE
    #: Per tile column, which pixel rows hold a change: (tile columns, h), made on first use.
    _columns: npt.NDArray[np.bool_] | None = None

    def tile_columns(self) -> npt.NDArray[np.bool_] | None:
        """``changed`` OR-ed over each tile column's words, transposed (None: not on this layout).

        A rectangle's changed rows then come from a few contiguous rows of this instead of one
        reduction per pixel row of ``changed`` (~40 ns each: a tall rectangle cost 20 us).
        Eight flags are OR-ed at a time as 64-bit words (0.16 ms a 1080p frame).
        """
        if self._columns is None:
            c = self.changed
            h, n = c.shape
            words = self.tile // self.per_word
            if words % 8 or n % words or n % 8 or not c.flags.c_contiguous:
                return None
            packed = c.view(np.uint64).reshape(h, n // words, words // 8)
            acc = packed[..., 0].copy()
            for k in range(1, words // 8):
                acc |= packed[..., k]
            self._columns = np.ascontiguousarray((acc != 0).T)
        return self._columns

    def bounds(self, rect: Rect) -> Rect | None:
        """The smallest rectangle inside ``rect`` holding all its changed pixels (None: none changed)."""
        pw, t = self.per_word, self.tile
        c0, c1 = rect.x // pw, -(-(rect.x + rect.w) // pw)
        y_end = rect.y + rect.h
        h, n = self.changed.shape
        columns = self.tile_columns() if rect.x % t == 0 and ((rect.x + rect.w) % t == 0 or c1 == n) else None
        if columns is not None:
            by_col = columns[rect.x // t : -(-(rect.x + rect.w) // t), rect.y : y_end]
            rows = np.flatnonzero(by_col[0] if len(by_col) == 1 else np.logical_or.reduce(by_col, axis=0))
        else:
            rows = np.flatnonzero(self.changed[rect.y : y_end, c0:c1].any(axis=1))
        if not len(rows):
            return None
        if self.band is not None and rect.y % t == 0 and (y_end % t == 0 or y_end == h):
            # Whole tile rows: their columns are already OR-ed in ``band`` (one row for most rectangles).
            band = self.band[rect.y // t : -(-y_end // t), c0:c1]
            cols = np.flatnonzero(band[0] if len(band) == 1 else band.any(axis=0))
        else:
            cols = np.flatnonzero(self.changed[rect.y + int(rows[0]) : rect.y + int(rows[-1]) + 1, c0:c1].any(axis=0))
        x0 = max(rect.x, (c0 + int(cols[0])) * pw)
        x1 = min(rect.x + rect.w, (c0 + int(cols[-1]) + 1) * pw)
        return Rect(x0, rect.y + int(rows[0]), x1 - x0, int(rows[-1] - rows[0]) + 1)


def dirty_tiles(sent: npt.NDArray[np.uint8], current: npt.NDArray[np.uint8], tile: int = TILE) -> Mask:
    """Boolean (rows, cols) mask of tiles whose BGRA pixels differ (the X padding byte included)."""
    return compare(sent, current, tile)[0]


def compare(sent: npt.NDArray[np.uint8], current: npt.NDArray[np.uint8], tile: int = TILE) -> tuple[Mask, Diff]:
    """Dirty tiles, and the per-pixel-row difference they came from (to cut rectangles tight).

    One pass over both frames, which is memory-bound (16 MB read at 1080p): two pixels per
    64-bit comparison where rows allow it, then two small OR-reductions into tiles.
    """
    h, w = current.shape[:2]
    rows, cols = tile_grid(w, h, tile)
    diff: npt.NDArray[np.bool_]
    if w % 2 == 0 and tile % 2 == 0 and sent.flags.c_contiguous and current.flags.c_contiguous:
        diff = np.not_equal(sent.reshape(h, w * 4).view(np.uint64), current.reshape(h, w * 4).view(np.uint64))
        per_word = 2
    else:
        diff = np.not_equal(sent.view(np.uint32).reshape(h, w), current.view(np.uint32).reshape(h, w))
        per_word = 1
    n = diff.shape[1]
    full = h // tile
    band = np.empty((rows, n), dtype=np.bool_)
    if full:
        np.logical_or.reduce(diff[: full * tile].reshape(full, tile, n), axis=1, out=band[:full])
    if full < rows:
        np.logical_or.reduce(diff[full * tile :], axis=0, out=band[full])
    words = tile // per_word
    whole = n // words
    mask: Mask = np.empty((rows, cols), dtype=np.bool_)
    if whole:
        np.logical_or.reduce(band[:, : whole * words].reshape(rows, whole, words), axis=2, out=mask[:, :whole])
    if whole < cols:
        np.logical_or.reduce(band[:, whole * words :], axis=1, out=mask[:, whole])
    return mask, Diff(diff, per_word, band, tile)


def rows_changed_everywhere(sent: npt.NDArray[np.uint8], current: npt.NDArray[np.uint8], tile: int = TILE
                            ) -> npt.NDArray[np.bool_]:
    """Per tile row: True when every tile has a changed pixel in its middle row (so all are dirty).

    One pixel row per tile row (1/64 of the frame) settles it where everything moves (a
    video); rows with any tile unchanged in the sample are left to :func:`compare`.
    """
    h, w = current.shape[:2]
    rows, cols = tile_grid(w, h, tile)
    half = tile // 2
    if (rows - 1) * tile + half < h:  # every middle row exists (1080p: 1056 for the short last tile row)
        # Strided views: the 17 rows of a 1080p frame are read in place, not gathered into copies first.
        differs = np.not_equal(sent.view(np.uint32)[half::tile, :, 0], current.view(np.uint32)[half::tile, :, 0])
    else:
        ys = [min(r * tile + half, h - 1) for r in range(rows)]
        differs = np.not_equal(sent[ys].view(np.uint32)[..., 0], current[ys].view(np.uint32)[..., 0])
    whole = w // tile
    everywhere: npt.NDArray[np.bool_] = np.logical_and.reduce(
        np.logical_or.reduce(differs[:, : whole * tile].reshape(rows, whole, tile), axis=2), axis=1)
    if whole < cols:
        everywhere &= differs[:, whole * tile :].any(axis=1)
    return everywhere


def compare_unless_whole(sent: npt.NDArray[np.uint8], current: npt.NDArray[np.uint8], whole: npt.NDArray[np.bool_],
                         tile: int = TILE) -> tuple[Mask, Diff | None]:
    """Dirty tiles: those of tile rows flagged in ``whole`` without reading them, the others compared (no
    per-pixel difference when every row is whole)."""
    h, w = current.shape[:2]
    if whole.all():
        return np.ones(tile_grid(w, h, tile), dtype=np.bool_), None
    if whole.any():
        return compare_rows(sent, current, whole, tile)
    return compare(sent, current, tile)


def compare_rows(sent: npt.NDArray[np.uint8], current: npt.NDArray[np.uint8], skip: npt.NDArray[np.bool_],
                 tile: int = TILE) -> tuple[Mask, Diff]:
    """:func:`compare`, except that tile rows flagged in ``skip`` count as changed everywhere unread."""
    h, w = current.shape[:2]
    rows, cols = tile_grid(w, h, tile)
    pairs = w % 2 == 0 and tile % 2 == 0 and sent.flags.c_contiguous and current.flags.c_contiguous
    mask: Mask = np.ones((rows, cols), dtype=np.bool_)
    changed = np.ones((h, w // 2 if pairs else w), dtype=np.bool_)
    bands = np.ones((rows, changed.shape[1]), dtype=np.bool_)
    r = 0
    while r < rows:
        if skip[r]:
            r += 1
            continue
        r1 = r
        while r1 < rows and not skip[r1]:
            r1 += 1
        y0, y1 = r * tile, min(r1 * tile, h)
        band, diff = compare(sent[y0:y1], current[y0:y1], tile)
        mask[r:r1] = band
        changed[y0:y1] = diff.changed
        assert diff.band is not None
        bands[r:r1] = diff.band
        r = r1
    return mask, Diff(changed, 2 if pairs else 1, bands, tile)


def merge_tiles(mask: Mask, width: int, height: int, tile: int = TILE) -> list[Rect]:
    """Cover the dirty tiles with few rectangles: runs per row, then equal runs stacked.

    Plain Python over the mask's rows as lists: a 1080p mask is 17 x 30 flags, where numpy's
    per-call cost (concatenate, flatnonzero per row) was most of the time.
    """
    open_runs: dict[tuple[int, int], list[int]] = {}  # (c0, c1) -> [row0, row1]
    done: list[tuple[int, int, int, int]] = []
    for r, row in enumerate(mask.tolist()):
        still_open: dict[tuple[int, int], list[int]] = {}
        if True in row:
            c, cols = 0, len(row)
            while c < cols:
                if not row[c]:
                    c += 1
                    continue
                c1 = c + 1
                while c1 < cols and row[c1]:
                    c1 += 1
                run = (c, c1)
                span = open_runs.pop(run, None)
                if span is None:
                    still_open[run] = [r, r + 1]
                else:
                    span[1] = r + 1
                    still_open[run] = span
                c = c1
        done.extend((c0, c1, r0, r1) for (c0, c1), (r0, r1) in open_runs.items())
        open_runs = still_open
    done.extend((c0, c1, r0, r1) for (c0, c1), (r0, r1) in open_runs.items())
    rects = []
    for c0, c1, r0, r1 in done:
        x, y = c0 * tile, r0 * tile
        rects.append(Rect(x, y, min(c1 * tile, width) - x, min(r1 * tile, height) - y))
    rects.sort(key=lambda rc: (rc.y, rc.x))
    return rects


def fill_rows(mask: Mask) -> Mask:
    """Each tile row dirty from its first to its last dirty tile (coarser, fewer rectangles)."""
    filled = np.zeros_like(mask)
    for r in np.flatnonzero(mask.any(axis=1)):
        cols = np.flatnonzero(mask[r])
        filled[r, cols[0] : cols[-1] + 1] = True
    return filled


def mask_of(rect: Rect, shape: tuple[int, int], tile: int = TILE) -> Mask:
    """Tiles covered by a tile-aligned rectangle."""
    mask = np.zeros(shape, dtype=np.bool_)
    mask[rect.y // tile : -(-(rect.y + rect.h) // tile), rect.x // tile : -(-(rect.x + rect.w) // tile)] = True
    return mask


def changed_bounds(sent: npt.NDArray[np.uint8], current: npt.NDArray[np.uint8]) -> Rect | None:
    """The smallest rectangle holding every differing pixel (alpha ignored), or None."""
    h, w = current.shape[:2]
    diff = np.not_equal(
        np.ascontiguousarray(sent).view(np.uint32).reshape(h, w),
        np.ascontiguousarray(current).view(np.uint32).reshape(h, w),
    )
    rows = np.flatnonzero(diff.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(diff[rows[0] : rows[-1] + 1].any(axis=0))
    return Rect(int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


def clip(rect: Rect, width: int, height: int) -> Rect | None:
    """``rect`` cut to a width x height frame at the origin, or None when nothing is left."""
    x0, y0 = max(rect.x, 0), max(rect.y, 0)
    x1, y1 = min(rect.x + rect.w, width), min(rect.y + rect.h, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return Rect(x0, y0, x1 - x0, y1 - y0)


def intersect(a: Rect, b: Rect) -> Rect | None:
    """The overlap of two rectangles, or None."""
    moved = clip(Rect(a.x - b.x, a.y - b.y, a.w, a.h), b.w, b.h)
    return None if moved is None else Rect(moved.x + b.x, moved.y + b.y, moved.w, moved.h)


def union(rects: list[Rect]) -> Rect:
    """The bounding box of non-empty ``rects``."""
    x0, y0 = min(r.x for r in rects), min(r.y for r in rects)
    x1, y1 = max(r.x + r.w for r in rects), max(r.y + r.h for r in rects)
    return Rect(x0, y0, x1 - x0, y1 - y0)


def uniform_tiles(frame: npt.NDArray[np.uint8], candidates: Mask, tile: int = TILE, min_count: int = 1
                  ) -> tuple[Mask, npt.NDArray[np.uint32]]:
    """Which ``candidates`` tiles of a BGRA frame are one colour, and each tile's first pixel.

    Flat areas of a changing picture (a colour bar under a hue shift, a window's
    background) go as FILL: exact, 24 bytes, and no JPEG time. The first pixel row of
    every tile (and its middle and last) rules out most detailed tiles for almost nothing; when fewer than
    ``min_count`` tiles are left after it, none is reported (not worth the messages).
    The rest are read once per tile row, over their column span (each column's extremes).
    """
    h, w = frame.shape[:2]
    rows, cols = tile_grid(w, h, tile)
    px = frame.view(np.uint32).reshape(h, w)
    corners: npt.NDArray[np.uint32] = np.ascontiguousarray(px[::tile, ::tile])
    found: Mask = np.zeros((rows, cols), dtype=np.bool_)
    whole = w // tile
    expected_rows = np.repeat(corners, tile, axis=1)[:, :w]
    firsts = px[::tile] == expected_rows
    for sample in (tile // 2, tile - 1):  # the middle and last rows too (clamped in a short last tile row)
        firsts &= px[[min(r * tile + sample, h - 1) for r in range(rows)]] == expected_rows
    maybe: Mask = np.zeros((rows, cols), dtype=np.bool_)
    maybe[:, :whole] = np.logical_and.reduce(firsts[:, : whole * tile].reshape(rows, whole, tile), axis=2)
    if whole < cols:
        maybe[:, whole] = firsts[:, whole * tile :].all(axis=1)
    maybe &= candidates
    if int(maybe.sum()) < max(min_count, 1):
        return found, corners
    pairs = w % 2 == 0 and tile % 2 == 0
    words = frame.reshape(h, w * 4).view(np.uint64 if pairs else np.uint32)
    per_tile = tile // 2 if pairs else tile
    expected = np.ascontiguousarray(expected_rows)
    if pairs:
        expected = expected.view(np.uint64)
    # Each tile row's columns still in question are read once: their largest and smallest word, two SIMD
    # reductions into a row of these (no boolean temporary of the band's size), compared after the loop in
    # one go. A column is the tile's colour throughout when both extremes are (video: 0.5 ms a frame).
    largest, smallest = np.empty_like(expected), np.empty_like(expected)
    firsts_at: list[int] = maybe.argmax(axis=1).tolist()
    lasts_at: list[int] = (cols - maybe[:, ::-1].argmax(axis=1)).tolist()
    wanted_rows: list[bool] = np.logical_or.reduce(maybe, axis=1).tolist()
    for r, wanted in enumerate(wanted_rows):
        if not wanted:
            continue
        lo, hi = firsts_at[r] * per_tile, min(lasts_at[r] * per_tile, words.shape[1])
        band = words[r * tile : (r + 1) * tile, lo:hi]
        np.maximum.reduce(band, axis=0, out=largest[r, lo:hi])
        np.minimum.reduce(band, axis=0, out=smallest[r, lo:hi])
    # Columns not read hold whatever np.empty left there: only tiles in ``maybe`` are kept below.
    differs = (largest != expected) | (smallest != expected)
    found[:, :whole] = ~np.logical_or.reduce(differs[:, : whole * per_tile].reshape(rows, whole, per_tile), axis=2)
    if whole < cols:  # the partial last column
        found[:, whole] = ~differs[:, whole * per_tile :].any(axis=1)
    found &= maybe
    if int(found.sum()) < min_count:
        found[...] = False
    return found, corners


#: :func:`fill_cover`'s marks for tiles that are not a free flat tile's colour.
WILD, TAKEN = -1, -2


def fill_cover(mask: Mask, colours: npt.NDArray[np.uint32], width: int, height: int, wildcard: Mask | None = None,
               tile: int = TILE) -> list[tuple[Rect, int]]:
    """Cover the ``mask`` tiles with few one-colour rectangles (greedy: right, then down).

    ``wildcard`` tiles may be covered too: the caller draws them over afterwards (the
    tiles of a change that need a picture), so a colour bar crossed by a moving line is
    one FILL, not one per stair step (``wildcard`` and ``mask`` do not overlap). Plain
    Python over lists: a few hundred tiles, where numpy's per-call cost dominated.
    """
    rows, cols = mask.shape
    # One list per tile row: a free flat tile's colour (>= 0), WILD, or TAKEN (not flat, or
    # already in a rectangle); a row segment then fits when its values are only the colour and WILD.
    others = TAKEN if wildcard is None else np.where(wildcard, WILD, TAKEN)
    cells: list[list[int]] = np.where(mask, colours.astype(np.int64), others).tolist()
    out: list[tuple[Rect, int]] = []
    for r in range(rows):
        row = cells[r]
        for c in range(cols):
            colour = row[c]
            if colour < 0:
                continue
            fits = {colour, WILD}
            c1 = c + 1
            while c1 < cols and row[c1] in fits:
                c1 += 1
            while row[c1 - 1] == WILD:  # no wildcard columns at the end: nothing of this colour there
                c1 -= 1
            r1 = r + 1
            while r1 < rows and fits.issuperset(cells[r1][c:c1]):
                r1 += 1
            while colour not in cells[r1 - 1][c:c1]:
                r1 -= 1
            for taken in cells[r:r1]:
                for k in range(c, c1):
                    if taken[k] >= 0:
                        taken[k] = TAKEN
            x, y = c * tile, r * tile
            out.append((Rect(x, y, min(c1 * tile, width) - x, min(r1 * tile, height) - y), colour))
    return out
