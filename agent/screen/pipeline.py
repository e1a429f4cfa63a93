"""One capture step: grab, compare with what was sent, encode the difference.

``ScreenPipeline.step`` runs in the session's capture thread (numpy, mss, simplejpeg
and zlib release the GIL for the heavy parts). It keeps the screen state the viewer
has been sent, which tiles were sent lossy, and when each tile last changed; tiles
still for ``settle_s`` that were sent lossy get a lossless REFRESH so text ends crisp.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from protocol.stream import Encoding, Flags, Kind, pack_update

from .capture import Frame, Monitor, ScreenGrabber
from .encoder import encode_jpeg, encode_png
from .tiles import TILE, Rect, dirty_tiles, fill_rows, merge_tiles, tile_grid

log = logging.getLogger(__name__)

#: Rectangles up to this many pixels try lossless first (a few tiles of text) ...
SMALL_AREA = 16 * TILE * TILE
#: ... when the whole update is at most this many tiles (typing, not motion).
SMALL_UPDATE_TILES = 24
#: Above this many rectangles, fill each tile row between its outermost dirty tiles:
#: fewer, larger JPEGs beat dozens of tiny ones (per-image overhead and CPU).
MAX_RECTS = 8
#: Lossless wins when it is at most this much larger than the JPEG (no refresh needed later).
LOSSLESS_BIAS = 1.5
#: Split rectangles above this many pixels into bands (bounded message size, earlier drawing).
MAX_RECT_PIXELS = 1024 * 1024


@dataclass
class EncodedUpdate:
    """The binary messages of one update (all with ``seq``; the last flagged END_OF_FRAME)."""

    seq: int
    messages: list[bytes]
    nbytes: int
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


def _png_level(rect: Rect) -> int:
    """Small regions compress hard (cheap, and typing bytes matter); big ones fast."""
    return 6 if rect.area <= SMALL_AREA else 1


def _bands(rect: Rect) -> list[Rect]:
    if rect.area <= MAX_RECT_PIXELS:
        return [rect]
    band = max(TILE, (MAX_RECT_PIXELS // rect.w) // TILE * TILE)
    return [Rect(rect.x, y, rect.w, min(band, rect.y + rect.h - y)) for y in range(rect.y, rect.y + rect.h, band)]


class ScreenPipeline:
    """What the viewer has, and how to bring it up to date with the screen."""

    def __init__(self, grabber: ScreenGrabber, monitor: int, *, settle_s: float = 0.3) -> None:
        self.grabber = grabber
        self.monitor = monitor
        self.settle_s = settle_s
        self._sent: Frame | None = None
        self._lossy: npt.NDArray[np.bool_] | None = None
        self._changed_at: npt.NDArray[np.float64] | None = None

    def geometry(self) -> Monitor:
        return self.grabber.monitors()[self.monitor]

    def reset(self, monitor: int | None = None) -> None:
        """Forget what was sent (monitor switch, viewer reload): the next step sends everything."""
        if monitor is not None:
            self.monitor = monitor
        self._sent = None

    def step(self, now: float, quality: int, seq: int) -> StepResult:
        """Capture once; return the update that brings the viewer up to date (or None)."""
        t0 = time.perf_counter()
        current = self.grabber.grab(self.monitor)
        t1 = time.perf_counter()
        h, w = current.shape[:2]
        rows, cols = tile_grid(w, h)
        if self._sent is None or self._sent.shape != current.shape:
            self._sent = np.zeros_like(current)
            self._lossy = np.zeros((rows, cols), dtype=np.bool_)
            self._changed_at = np.full((rows, cols), now, dtype=np.float64)
            dirty = np.ones((rows, cols), dtype=np.bool_)
        else:
            dirty = dirty_tiles(self._sent, current)
        assert self._lossy is not None and self._changed_at is not None
        settled = self._lossy & ~dirty & (now - self._changed_at >= self.settle_s)
        changed = bool(dirty.any())
        if not changed and not settled.any():
            return StepResult(None, False, t1 - t0)

        messages: list[tuple[Kind, Rect, Encoding, bytes]] = []
        lossy_any = False
        rects = merge_tiles(dirty, w, h) if changed else []
        if len(rects) > MAX_RECTS:
            rects = merge_tiles(fill_rows(dirty), w, h)
        try_lossless = int(dirty.sum()) <= SMALL_UPDATE_TILES
        for rect in rects:
            for band in _bands(rect):
                region = current[band.y : band.y + band.h, band.x : band.x + band.w]
                encoding, payload = self._encode_change(region, band, quality, try_lossless)
                lossy = encoding is Encoding.JPEG
                lossy_any |= lossy
                self._mark(band, lossy, now)
                messages.append((Kind.UPDATE, band, encoding, payload))
        # Every dirty tile is being sent and every other tile already equals the screen,
        # so the viewer's state is now exactly this capture (grabbers return fresh arrays).
        self._sent = current
        refresh_rects = merge_tiles(settled, w, h) if settled.any() else []
        for rect in refresh_rects:
            for band in _bands(rect):
                region = self._sent[band.y : band.y + band.h, band.x : band.x + band.w]
                messages.append((Kind.REFRESH, band, Encoding.PNG, encode_png(region, _png_level(band))))
                self._mark(band, False, None)
        packed = [
            pack_update(
                kind=kind, monitor=self.monitor, x=r.x, y=r.y, w=r.w, h=r.h, encoding=enc, seq=seq,
                payload=payload, flags=Flags.END_OF_FRAME if i == len(messages) - 1 else Flags.NONE,
            )
            for i, (kind, r, enc, payload) in enumerate(messages)
        ]
        update = EncodedUpdate(
            seq, packed, sum(map(len, packed)), len(packed), lossy_any, refresh=bool(refresh_rects)
        )
        return StepResult(update, changed, t1 - t0, time.perf_counter() - t1, rects)

    def _encode_change(
        self, region: Frame, rect: Rect, quality: int, try_lossless: bool
    ) -> tuple[Encoding, bytes]:
        jpeg = encode_jpeg(region, quality)
        if try_lossless and rect.area <= SMALL_AREA:
            png = encode_png(region, _png_level(rect))
            if len(png) <= len(jpeg) * LOSSLESS_BIAS:
                return Encoding.PNG, png
        return Encoding.JPEG, jpeg

    def _mark(self, rect: Rect, lossy: bool, now: float | None) -> None:
        assert self._lossy is not None and self._changed_at is not None
        rs = slice(rect.y // TILE, -(-(rect.y + rect.h) // TILE))
        cs = slice(rect.x // TILE, -(-(rect.x + rect.w) // TILE))
        self._lossy[rs, cs] = lossy
        if now is not None:
            self._changed_at[rs, cs] = now
