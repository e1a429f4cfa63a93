"""One capture step: grab, compare with what was sent, encode the difference.

``ScreenPipeline.step`` runs in the session's capture thread (numpy, mss, simplejpeg
and zlib release the GIL for the heavy parts). It keeps the screen state the viewer
has been sent, which tiles were sent lossy, and when each tile last changed; tiles
still for ``settle_s`` that were sent lossy get a lossless REFRESH so text ends crisp.

Given damage (rectangles the display server reported drawn), a step grabs only the
tiles under it, so a keystroke costs a grab of a few tiles instead of 8 MB. Small
updates (typing) are cut to the exact bounding box of the changed pixels and sent
lossless once: no JPEG first and no refresh of the same tiles later. A rectangle of
one colour (a caret, a toggled box) goes as FILL, three bytes of payload; so do the
one-colour tiles of a large change, and a frame whose every tile shows a change in a
sampled row is taken whole without the full comparison (video).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from protocol.jpeg_tables import strip_standard_tables
from protocol.stream import Encoding, Flags, Kind, batch_records, pack_update

from . import cut
from .capture import Frame, Monitor, PairedViewGrabber, RegionGrabber, ScreenGrabber, ViewGrabber
from .encoder import encode_jpeg, encode_png, jpeg_params, uniform_colour
from .tiles import (
    TILE,
    Diff,
    Rect,
    changed_bounds,
    clip,
    compare_unless_whole,
    dirty_tiles,
    fill_cover,
    fill_rows,
    intersect,
    merge_tiles,
    rows_changed_everywhere,
    tile_grid,
    uniform_tiles,
    union,
)

log = logging.getLogger(__name__)

#: Rectangles up to this many pixels try lossless first (a few tiles of text) ...
SMALL_AREA = 16 * TILE * TILE
#: ... when the whole update is at most this many tiles (typing, not motion).
SMALL_UPDATE_TILES = 24
#: Above this many rectangles, fill each tile row between its outermost dirty tiles:
#: fewer, larger JPEGs beat dozens of tiny ones (per-image overhead and CPU). Measured on
#: testsrc2 (17 rectangles of changed tiles): filling rows encoded 1.5x the pixels, cost 25 %
#: more JPEG time and more bytes than the 17 JPEGs, so only a really scattered change fills.
MAX_RECTS = 24
#: Updates above this many dirty tiles look for one-colour tiles among them, sent as FILL:
#: exact and nearly free, where JPEG spent most of a frame's CPU on flat areas whose colour
#: changed (testsrc2's bars under a hue shift: 80 % of the tiles). Below it (typing) the
#: rectangles are small and already checked whole.
UNIFORM_FROM_TILES = SMALL_UPDATE_TILES
#: ... and use them only when at least this share of the dirty tiles may be flat: a few flat
#: tiles beside moving content (testsrc2's wake, 7 %) cost more in messages and in the check
#: than their share of the JPEG.
FLAT_MIN_SHARE = 0.25
#: Lossless wins when it is at most this much larger than the JPEG (no refresh needed later).
LOSSLESS_BIAS = 1.5
#: A PNG this small per pixel (text, flat UI) is kept without encoding a JPEG to compare.
CHEAP_PNG_BYTES_PER_PX = 0.25
#: Damage covering more than this share of the monitor's tiles is read with one full grab.
FULL_GRAB_SHARE = 0.5
#: Damaged candidate areas up to this many tiles get the exact bounding box of their changes.
TIGHT_TILES = 64
#: Split rectangles above this many pixels into bands (bounded message size, earlier drawing).
MAX_RECT_PIXELS = 1024 * 1024
#: While lossy updates keep coming (motion, video), a still lossy tile waits this long for its
#: lossless refresh instead of ``settle_s``: refreshing the wake of moving content every 0.3 s
#: was the largest cost of a motion session (PNG of photographic tiles, 18 % of its CPU samples).
BUSY_SETTLE_S = 2.0
#: During motion, at most this many tiles per second are refreshed (oldest first; a burst of
#: one second's worth): the wake of a moving picture is photographic, 2-3 bytes/pixel as PNG.
BUSY_REFRESH_TILES_PER_S = 24.0
#: zlib level of refresh PNGs: what they refine is picture-like, where 9 costs much and gains little.
REFRESH_PNG_LEVEL = 6
#: ... and while motion goes on (the rationed refresh of its wake): level 1 is 3-4x faster on
#: photographic tiles for ~10 % more bytes, at 24 tiles/s.
BUSY_REFRESH_PNG_LEVEL = 1


@dataclass
class EncodedUpdate:
    """The binary messages of one update (all with ``seq``; the last record flagged END_OF_FRAME)."""

    seq: int
    #: One record each, or (``batched``) the records joined into as few messages as fit.
    messages: list[bytes]
    nbytes: int
    #: Records (rectangles) in the update.
    rects: int
    lossy: bool
    refresh: bool


@dataclass
class StepResult:
    update: EncodedUpdate | None
    changed: bool
    grab_s: float = 0.0
    encode_s: float = 0.0
    dirty_rects: list[Rect] = field(default_factory=list)
    #: Pixels read from the screen in this step.
    grabbed_px: int = 0
    #: Tiles that differed from what the viewer had.
    dirty_count: int = 0


class _Grabbed(NamedTuple):
    """What one grab found: dirty tiles, pixels read, exact change boxes (damage steps only)."""

    dirty: npt.NDArray[np.bool_]
    pixels: int
    tight: list[Rect] | None
    #: Full grabs: the per-row difference, to cut each rectangle to its changed pixels.
    diff: Diff | None = None
    #: Full grabs: the frame itself (changes are encoded from it; ``_sent`` may not hold them all).
    frame: Frame | None = None


def _png_level(rect: Rect) -> int:
    """Small regions compress hard (cheap, and typing bytes matter); big ones fast."""
    if rect.area <= 4 * TILE * TILE:
        return 9
    return 6 if rect.area <= SMALL_AREA else 1


def _bands(rect: Rect) -> list[Rect]:
    if rect.area <= MAX_RECT_PIXELS:
        return [rect]
    band = max(TILE, (MAX_RECT_PIXELS // rect.w) // TILE * TILE)
    return [Rect(rect.x, y, rect.w, min(band, rect.y + rect.h - y)) for y in range(rect.y, rect.y + rect.h, band)]


def _overlaps(rows: list[list[bool] | None], rect: Rect) -> bool:
    """Whether any tile under ``rect`` is flagged in ``rows`` (a mask's rows as lists, None where all clear)."""
    c0, c1 = rect.x // TILE, -(-(rect.x + rect.w) // TILE)
    return any(row is not None and True in row[c0:c1] for row in rows[rect.y // TILE : -(-(rect.y + rect.h) // TILE)])


class ScreenPipeline:
    """What the viewer has, and how to bring it up to date with the screen."""

    def __init__(self, grabber: ScreenGrabber, monitor: int, *, settle_s: float = 0.3,
                 busy_settle_s: float = BUSY_SETTLE_S, busy_refresh_tiles_per_s: float = BUSY_REFRESH_TILES_PER_S,
                 lean_jpeg: bool = False, batched: bool = False) -> None:
        self.grabber = grabber
        #: The viewers rebuild libjpeg's standard tables (``Encoding.JPEG_LEAN``): JPEGs go without them.
        self.lean_jpeg = lean_jpeg
        #: The viewers read batched updates: an update's records travel together (``stream.batch_records``).
        self.batched = batched
        # Protocol isinstance checks walk the protocol's members (tens of us): once, not per step.
        self._regions: RegionGrabber | None = grabber if isinstance(grabber, RegionGrabber) else None
        self._views: ViewGrabber | None = grabber if isinstance(grabber, ViewGrabber) else None
        self._paired: PairedViewGrabber | None = grabber if isinstance(grabber, PairedViewGrabber) else None
        self.monitor = monitor
        self.settle_s = settle_s
        self.busy_settle_s = max(busy_settle_s, settle_s)
        self.busy_refresh_rate = busy_refresh_tiles_per_s
        self._refresh_tokens = busy_refresh_tiles_per_s
        self._tokens_at = float("-inf")
        #: When the last lossy update was made (motion in progress while recent).
        self._last_lossy = float("-inf")
        #: The screen's exact pixels as of the last step; the viewer has these, except
        #: that tiles flagged in ``_lossy`` were sent as JPEG.
        self._sent: Frame | None = None
        self._lossy: npt.NDArray[np.bool_] | None = None
        self._changed_at: npt.NDArray[np.float64] | None = None
        #: Tile rows of ``_sent`` not copied from the screen (all sent, and changed everywhere in the
        #: sample; only the sampled pixel rows are current): the next full grab sends them whole.
        self._stale: npt.NDArray[np.bool_] | None = None
        self._geometry: Monitor | None = None

    def geometry(self) -> Monitor:
        return self.grabber.monitors()[self.monitor]

    def reset(self, monitor: int | None = None) -> None:
        """Forget what was sent (monitor switch, viewer reload): the next step sends everything."""
        if monitor is not None:
            self.monitor = monitor
        self._sent = None

    @property
    def primed(self) -> bool:
        """True once a full frame was taken (damage steps need one to compare against)."""
        return self._sent is not None

    def refresh_due_at(self) -> float | None:
        """When the earliest lossy tile will have settled (a lossless refresh is due), or None."""
        if self._lossy is None or self._changed_at is None or not self._lossy.any():
            return None
        earliest = float(self._changed_at[self._lossy].min())
        # Still for settle_s once motion stopped. During motion no timer is needed: the
        # rationed refresh rides on the steps the motion makes anyway (a timer per budgeted
        # tile made a relayed 7 fps video cost 26 updates/s).
        due = max(earliest, self._last_lossy) + self.settle_s
        # A microsecond late, so that at the deadline the comparisons in ``_settled`` hold in floats.
        return due + 1e-6

    def _settled(self, now: float, dirty: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """Lossy tiles due for their lossless refresh at ``now``."""
        assert self._lossy is not None and self._changed_at is not None
        # Motion goes on while this step carries a large change too: a slow viewer spaces
        # the steps of a playing video further apart than settle_s.
        busy = now - self._last_lossy < self.settle_s or int(dirty.sum()) > SMALL_UPDATE_TILES
        wait = self.busy_settle_s if busy else self.settle_s
        settled: npt.NDArray[np.bool_] = self._lossy & ~dirty & (now - self._changed_at >= wait)
        if not busy:
            return settled
        rate = self.busy_refresh_rate
        self._refresh_tokens = min(rate, self._refresh_tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        count, budget = int(settled.sum()), int(self._refresh_tokens)
        if count > budget:  # the oldest first
            flat = np.flatnonzero(settled)
            keep = flat[np.argsort(self._changed_at.flat[flat], kind="stable")[:budget]]
            settled = np.zeros_like(settled)
            settled.flat[keep] = True
            count = budget
        self._refresh_tokens -= count
        return settled

    def step(self, now: float, quality: int, seq: int, damage: list[Rect] | None = None) -> StepResult:
        """Capture once; return the update that brings the viewer up to date (or None).

        ``damage`` (screen coordinates) limits the grab to those areas; None reads the
        whole monitor (first frame, polling, a consistency check).
        """
        t0 = time.perf_counter()
        stale = self._stale is not None and bool(self._stale.any())
        if damage is None or self._sent is None or self._regions is None:
            grabbed = self._grab_full(now)
        elif stale:  # rows not copied last time: a full grab, told which rows the damage spared
            damaged_rows: npt.NDArray[np.bool_] = np.logical_or.reduce(self._damaged_tiles(damage), axis=1)
            grabbed = self._grab_full(now, damaged_rows)
        else:
            grabbed = self._grab_damage(damage, now)
        dirty, grabbed_px, tight, diff = grabbed.dirty, grabbed.pixels, grabbed.tight, grabbed.diff
        t1 = time.perf_counter()
        sent, lossy_map, changed_at = self._sent, self._lossy, self._changed_at
        assert sent is not None and lossy_map is not None and changed_at is not None
        # Dirty tiles are encoded from the capture itself (a lent XShm view: no copy needed);
        # still tiles (the refresh) from ``_sent``, which equals the screen there.
        source = grabbed.frame if grabbed.frame is not None else sent
        h, w = sent.shape[:2]
        settled = self._settled(now, dirty)
        changed = bool(dirty.any())
        if not changed and not settled.any():
            return StepResult(None, False, t1 - t0, grabbed_px=grabbed_px)

        messages: list[tuple[Kind, Rect, Encoding, bytes]] = []
        lossy_any = False
        dirty_count = int(dirty.sum())
        pictured = dirty  # the dirty tiles that need a picture (not one colour)
        overdrawn: npt.NDArray[np.bool_] | None = None  # pictured tiles a FILL covered first
        under: npt.NDArray[np.int64] | None = None  # the FILL colour drawn under each tile (pictures are cut to it)
        if dirty_count > UNIFORM_FROM_TILES:
            flat, colours = uniform_tiles(source, dirty, min_count=int(dirty_count * FLAT_MIN_SHARE))
            if flat.any():
                pictured = dirty & ~flat
                under = cut.no_fills(dirty.shape)
                # Messages are drawn in order: a FILL may span pictured tiles that the pictures
                # after it cover again, cut to the pixels that differ from its colour (whole without ``cut``).
                for area, bgrx in fill_cover(flat, colours, w, h, pictured):
                    messages.append((Kind.UPDATE, area, Encoding.FILL, bgrx.to_bytes(4, "little")[:3]))
                    under[area.y // TILE : -(-(area.y + area.h) // TILE),
                          area.x // TILE : -(-(area.x + area.w) // TILE)] = bgrx
                overdrawn = (under != cut.NO_FILL) & pictured
                lossy_map[flat] = False  # whole tiles, exact now
                changed_at[flat] = now
        rects = merge_tiles(pictured, w, h) if changed else []
        filled = len(rects) > MAX_RECTS
        if filled:
            # Fill only over tiles the viewer holds lossy anyway: re-sending a lossless still
            # tile as JPEG would cost its refresh again (testsrc2's still bars, over and over).
            rects = merge_tiles(fill_rows(pictured) & (pictured | (lossy_map & ~dirty)), w, h)
        small = dirty_count <= SMALL_UPDATE_TILES
        lossy_cover = np.zeros_like(dirty)  # the tiles JPEG rectangles of this step cover
        # uniform_tiles ran to the end: every pictured tile failed its check, so a rectangle of
        # whole pictured tiles is not one colour either (video: 4 % of a step went on asking again).
        detailed = overdrawn is not None and not filled
        # Per tile row, the columns of pictured tiles a FILL covered (rows as lists: a slice and .any() per
        # rectangle cost more than the test).
        under_fill = [row if True in row else None for row in overdrawn.tolist()] if overdrawn is not None else None
        for rect in rects:
            whole = True
            if under_fill is not None and _overlaps(under_fill, rect):
                # Over the FILL drawn under it: the box of the pixels that differ from its colour (else whole),
                # pictured tiles still, not asked again whether it is one colour.
                box = cut.differing_box(source, under, rect) if under is not None and cut.AVAILABLE else None
                if box is not None:
                    rect = box
            elif tight is not None:
                rect, whole = self._tighten(rect, tight) or rect, False
            elif diff is not None:
                # Whole tiles hold 3x the changed pixels of a diagonal motion (testsrc2): the
                # cut saves JPEG time and ~8 % of the bytes. A filled-in rectangle with no change
                # at all (lossy tiles only) is left to the refresh.
                bounds = diff.bounds(rect)
                if bounds is None:
                    continue
                rect, whole = bounds, False
            for band in _bands(rect):
                region = source[band.y : band.y + band.h, band.x : band.x + band.w]
                encoding, payload = self._encode_change(region, band, quality, small, not (detailed and whole))
                if encoding is Encoding.JPEG or encoding is Encoding.JPEG_LEAN:
                    # Marked lossy all at once below (these rectangles cover distinct tiles): a slice a band here.
                    lossy_any = True
                    lossy_cover[band.y // TILE : -(-(band.y + band.h) // TILE),
                                band.x // TILE : -(-(band.x + band.w) // TILE)] = True
                else:
                    self._mark(band, False, now, dirty)
                messages.append((Kind.UPDATE, band, encoding, payload))
        if lossy_any:  # as _mark does for a lossy rectangle, for all of them (before the refresh marks its own)
            lossy_map |= lossy_cover
            changed_at[lossy_cover & dirty] = now
        refresh_rects = merge_tiles(settled, w, h) if settled.any() else []
        busy = lossy_any or now - self._last_lossy < self.settle_s
        for rect in refresh_rects:
            for band in _bands(rect):
                region = sent[band.y : band.y + band.h, band.x : band.x + band.w]
                colour = uniform_colour(region)
                if colour is not None:
                    messages.append((Kind.REFRESH, band, Encoding.FILL, colour))
                else:
                    level = BUSY_REFRESH_PNG_LEVEL if busy else min(_png_level(band), REFRESH_PNG_LEVEL)
                    messages.append((Kind.REFRESH, band, Encoding.PNG, encode_png(region, level)))
                self._mark(band, False, None, dirty)
        last, monitor = len(messages) - 1, self.monitor
        packed = [
            pack_update(
                kind=kind, monitor=monitor, x=r.x, y=r.y, w=r.w, h=r.h, encoding=enc, seq=seq,
                payload=payload, flags=Flags.END_OF_FRAME if i == last else Flags.NONE,
            )
            for i, (kind, r, enc, payload) in enumerate(messages)
        ]
        if lossy_any:
            self._last_lossy = now
        update = EncodedUpdate(
            seq, batch_records(packed) if self.batched else packed, sum(map(len, packed)), len(packed), lossy_any,
            refresh=bool(refresh_rects),
        )
        return StepResult(update, changed, t1 - t0, time.perf_counter() - t1, rects, grabbed_px, dirty_count)

    def _grab_full(self, now: float, damaged_rows: npt.NDArray[np.bool_] | None = None) -> _Grabbed:
        """Compare the whole monitor with ``_sent`` and bring ``_sent`` up to it.

        A :class:`ViewGrabber` lends its capture buffer: only the changed tile rows are
        copied out of it (no 8 MB allocation and copy per frame of motion). A
        :class:`PairedViewGrabber`'s capture becomes ``_sent`` itself (:meth:`_adopt`).
        """
        views = self._views
        current = views.grab_view(self.monitor) if views is not None else self.grabber.grab(self.monitor)
        h, w = current.shape[:2]
        rows, cols = tile_grid(w, h)
        sent = self._sent
        kept = self._paired is not None and self._paired.keeps_view(current)
        if kept and sent is not None and np.may_share_memory(sent, current):
            sent = None  # the last-sent frame was a view this grab wrote over (a step that failed midway): start over
        if sent is None or sent.shape != current.shape or self._stale is None:
            self._geometry = self.geometry()
            self._sent = np.array(current, copy=True)
            self._lossy = np.zeros((rows, cols), dtype=np.bool_)
            self._changed_at = np.full((rows, cols), now, dtype=np.float64)
            self._stale = np.zeros(rows, dtype=np.bool_)
            return _Grabbed(np.ones((rows, cols), dtype=np.bool_), h * w, None)
        # Tile rows whose every tile changed in the sampled pixel row (a playing video) are sent
        # whole without the comparison (a 16 MB read for a frame), and not even copied: only their
        # sampled rows are, for the next check. Rows left stale that way are sent whole (and copied)
        # at the first full grab that finds them not changed everywhere.
        everywhere = rows_changed_everywhere(sent, current)
        if kept:
            return self._adopt(current, sent, everywhere | self._stale)
        stale, self._stale = self._stale, everywhere
        if damaged_rows is not None:
            # A stale row no damage touched since the last step still shows what that step sent
            # (the picture stopped): copied now, it is not sent again; its refresh follows as usual.
            for r in np.flatnonzero(stale & ~damaged_rows & ~everywhere):
                y0 = int(r) * TILE
                sent[y0 : y0 + TILE] = current[y0 : y0 + TILE]
            stale = stale & damaged_rows
        dirty, diff = compare_unless_whole(sent, current, everywhere | stale)
        # Every dirty tile is sent in this step and every other tile already equals the
        # screen, so after it the viewer's state is this capture.
        # Only the runs of dirty tiles are copied, not the span from a row's first to its last
        # (testsrc2 motion: 107 tiles instead of 164, 1 MB less a frame).
        for tr, row in enumerate(dirty.tolist()):
            if True not in row:
                continue
            top = tr * TILE
            bottom = min(top + TILE, h)
            if everywhere[tr]:
                y = min(top + TILE // 2, h - 1)  # the sampled row only
                sent[y] = current[y]
                continue
            c = row.index(True)
            while c < cols:
                c1 = c + 1
                while c1 < cols and row[c1]:
                    c1 += 1
                x0, x1 = c * TILE, min(c1 * TILE, w)
                sent[top:bottom, x0:x1] = current[top:bottom, x0:x1]
                c = c1 + 1
                while c < cols and not row[c]:
                    c += 1
        return _Grabbed(dirty, h * w, None, diff, current)

    def _adopt(self, current: Frame, sent: Frame, whole: npt.NDArray[np.bool_]) -> _Grabbed:
        """Compare a capture the grabber keeps intact through its next grab, and make it the last-sent frame as
        it is: no tile row is copied, none is left stale. ``whole``: tile rows sent whole without comparing."""
        h, w = current.shape[:2]
        dirty, diff = compare_unless_whole(sent, current, whole)
        self._sent = current
        assert self._stale is not None
        self._stale[:] = False
        return _Grabbed(dirty, h * w, None, diff, current)

    def _damaged_tiles(self, damage: list[Rect]) -> npt.NDArray[np.bool_]:
        """The monitor's tiles under ``damage`` (screen coordinates)."""
        sent, geometry = self._sent, self._geometry
        assert sent is not None and geometry is not None
        h, w = sent.shape[:2]
        candidates = np.zeros(tile_grid(w, h), dtype=np.bool_)
        for rect in damage:
            local = clip(Rect(rect.x - geometry.x, rect.y - geometry.y, rect.w, rect.h), w, h)
            if local is not None:
                candidates[local.y // TILE : -(-(local.y + local.h) // TILE),
                           local.x // TILE : -(-(local.x + local.w) // TILE)] = True
        return candidates

    def _grab_damage(self, damage: list[Rect], now: float) -> _Grabbed:
        """Grab the tiles under ``damage``; copy them into ``_sent`` after comparing."""
        sent, geometry, grabber = self._sent, self._geometry, self._regions
        assert sent is not None and geometry is not None and grabber is not None
        h, w = sent.shape[:2]
        rows, cols = tile_grid(w, h)
        candidates = self._damaged_tiles(damage)
        count = int(candidates.sum())
        if count > FULL_GRAB_SHARE * rows * cols:
            return self._grab_full(now)
        areas = merge_tiles(candidates, w, h)
        if len(areas) > MAX_RECTS:
            areas = merge_tiles(fill_rows(candidates), w, h)
        dirty = np.zeros((rows, cols), dtype=np.bool_)
        tight: list[Rect] | None = [] if count <= TIGHT_TILES else None
        grabbed_px = 0
        for area in areas:
            region = grabber.grab_region(self.monitor, area)
            grabbed_px += area.area
            old = sent[area.y : area.y + area.h, area.x : area.x + area.w]
            r0, c0 = area.y // TILE, area.x // TILE
            sub = dirty_tiles(old, region)
            dirty[r0 : r0 + sub.shape[0], c0 : c0 + sub.shape[1]] = sub
            if tight is not None and sub.any():
                bounds = changed_bounds(old, region)
                if bounds is not None:
                    tight.append(Rect(bounds.x + area.x, bounds.y + area.y, bounds.w, bounds.h))
            old[...] = region
        return _Grabbed(dirty, grabbed_px, tight)

    @staticmethod
    def _tighten(rect: Rect, tight: list[Rect]) -> Rect | None:
        """The part of ``rect`` that holds changed pixels."""
        parts = [part for t in tight if (part := intersect(t, rect)) is not None]
        return union(parts) if parts else None

    def _encode_change(self, region: Frame, rect: Rect, quality: int, small: bool, may_be_flat: bool = True
                       ) -> tuple[Encoding, bytes]:
        colour = uniform_colour(region) if may_be_flat else None
        if colour is not None:  # a caret, a toggled box, a cleared area: 24 bytes, lossless
            return Encoding.FILL, colour
        if small and rect.area <= SMALL_AREA:
            png = encode_png(region, _png_level(rect))
            if len(png) <= rect.area * CHEAP_PNG_BYTES_PER_PX + 256:
                return Encoding.PNG, png
            jpeg = encode_jpeg(region, quality)
            if len(png) <= len(jpeg) * LOSSLESS_BIAS:  # the whole file: the choice does not hang on the tables
                return Encoding.PNG, png
            return self._as_sent(jpeg, quality)
        return self._as_sent(encode_jpeg(region, quality), quality)

    def _as_sent(self, jpeg: bytes, quality: int) -> tuple[Encoding, bytes]:
        """A JPEG (of ladder step ``quality``) as it goes out: without its standard parts where the viewers
        rebuild them."""
        if self.lean_jpeg:
            lean = strip_standard_tables(jpeg, jpeg_params(quality)[0])
            if lean is not None:
                return Encoding.JPEG_LEAN, lean
        return Encoding.JPEG, jpeg

    def _mark(self, rect: Rect, lossy: bool, now: float | None, dirty: npt.NDArray[np.bool_]) -> None:
        """Record what the tiles under ``rect`` now hold on the viewer.

        Lossless data clears the lossy flag only of tiles it covers whole: a tight
        rectangle inside a tile sent as JPEG earlier leaves the rest of it to the refresh.
        """
        assert self._lossy is not None and self._changed_at is not None
        rs = slice(rect.y // TILE, -(-(rect.y + rect.h) // TILE))
        cs = slice(rect.x // TILE, -(-(rect.x + rect.w) // TILE))
        if lossy:
            self._lossy[rs, cs] = True
        else:
            inner_rs = slice(-(-rect.y // TILE), (rect.y + rect.h) // TILE)
            inner_cs = slice(-(-rect.x // TILE), (rect.x + rect.w) // TILE)
            h, w = self._sent.shape[:2] if self._sent is not None else (0, 0)
            # Tiles cut by the frame's right or bottom edge are whole when the rect reaches the edge.
            if rect.x + rect.w == w:
                inner_cs = slice(inner_cs.start, cs.stop)
            if rect.y + rect.h == h:
                inner_rs = slice(inner_rs.start, rs.stop)
            self._lossy[inner_rs, inner_cs] = False
        if now is not None:  # still tiles swept into a filled row keep their time: they did not change
            block = self._changed_at[rs, cs]
            block[dirty[rs, cs]] = now
