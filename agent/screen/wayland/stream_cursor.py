"""The pointer as the screen-cast stream's cursor metadata tells it, for the session's cursor path.

With the streams recorded in cursor-mode *metadata* (Mutter's ``cursor-mode`` 2, the portal's
``cursor_mode`` 4) the compositor leaves the pointer out of the frames and sends its position with
each buffer and its image when it changes (``SPA_META_Cursor``; seen on the headless Mutter 43.8: the
position relative to the stream, the image RGBA with its hotspot only in the buffer that changes it,
an empty 0×0 image where no client set one — the bare desktop). The native readers (native.py) feed
that into one :class:`StreamCursor`, which is all three of the session's cursor seams, as XFixes and
XInput are on X11: a :class:`~agent.screen.pointer.PointerSource` (desktop coordinates), a
:class:`~agent.screen.cursor_shape.CursorShapeSource` and a :class:`~agent.screen.pointer_watch.PointerWatch`
(it wakes the session's cursor task only when something changed, so a still pointer costs nothing).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from protocol.stream import MAX_CURSOR_SIDE

from ..cursor_shape import CursorImage

#: What is sent for an empty image: one transparent pixel (the viewer then draws no pointer).
EMPTY = CursorImage(1, 1, 0, 0, bytes(4), 0)


def straight_alpha(rgba: bytes, w: int, h: int) -> bytes:
    """``rgba`` with straight alpha: un-premultiplied when it looks premultiplied (no colour above its alpha).

    Mutter hands the cursor over as Cogl read it back; a premultiplied image never has a colour byte above
    its alpha, while a straight one with any light half-transparent pixel does — so the test is safe both ways.
    """
    pixels = np.frombuffer(rgba, dtype=np.uint8).reshape(h, w, 4)
    alpha = pixels[:, :, 3:4]
    if (pixels[:, :, :3] > alpha).any():
        return rgba
    partial = (alpha > 0) & (alpha < 255)
    if not partial.any():
        return rgba
    colour = pixels[:, :, :3].astype(np.uint16) * 255 + alpha // 2
    scaled = np.where(alpha > 0, colour // np.maximum(alpha, 1), 0).astype(np.uint8)
    return np.concatenate([scaled, pixels[:, :, 3:4]], axis=2).tobytes()


def cursor_image(rgba: bytes, w: int, h: int, hot_x: int, hot_y: int, serial: int) -> CursorImage:
    """The viewer's image of a metadata bitmap: straight alpha, cropped to the protocol's largest side."""
    if w == 0 or h == 0:
        return CursorImage(EMPTY.w, EMPTY.h, 0, 0, EMPTY.rgba, serial)
    rgba = straight_alpha(rgba, w, h)
    if w > MAX_CURSOR_SIDE or h > MAX_CURSOR_SIDE:
        cw, ch = min(w, MAX_CURSOR_SIDE), min(h, MAX_CURSOR_SIDE)
        rgba = np.frombuffer(rgba, dtype=np.uint8).reshape(h, w, 4)[:ch, :cw].tobytes()
        w, h = cw, ch
    return CursorImage(w, h, min(max(hot_x, 0), w - 1), min(max(hot_y, 0), h - 1), rgba, serial)


class StreamCursor:
    """Pointer position and image from the readers' metadata (thread-safe: readers write, the session reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._position: tuple[int, int] | None = None
        #: The reader whose stream last showed the pointer (a Mosaic has several; only it may hide it).
        self._owner: object | None = None
        self._shape: CursorImage | None = None
        self._returned = 0
        self._serial = 0
        self._notify: Callable[[], None] = lambda: None
        #: Position reports and images received (tests and logs).
        self.positions = 0
        self.shapes = 0

    # --- fed by the readers (their threads) -------------------------------------------------

    def update(self, owner: object, position: tuple[int, int] | None, shape: tuple[bytes, int, int, int, int] | None,
               on_stream: bool = True) -> None:
        """A buffer's metadata: ``position`` in desktop coordinates, ``shape`` (rgba, w, h, hot_x, hot_y) when a
        new image came. ``on_stream`` False: the pointer is not on ``owner``'s stream, ``position`` is a point
        just outside it (the viewer then hides the pointer) — ignored when another stream showed it last."""
        changed = False
        with self._lock:
            if position is not None and (on_stream or self._owner is None or owner is self._owner):
                changed = position != self._position
                self._position = position
                self._owner = owner if on_stream else None
                self.positions += 1
            if shape is not None:
                self._serial += 1
                self._shape = cursor_image(*shape, serial=self._serial)
                self.shapes += 1
                changed = True
            notify = self._notify
        if changed:
            notify()

    # --- PointerWatch -----------------------------------------------------------------------

    def start(self, notify: Callable[[], None]) -> None:
        with self._lock:
            self._notify = notify

    # --- PointerSource ----------------------------------------------------------------------

    def position(self) -> tuple[int, int] | None:
        """Where the pointer is on the desktop (just outside the stream read when it is elsewhere); None before the
        first report."""
        with self._lock:
            return self._position

    # --- CursorShapeSource ------------------------------------------------------------------

    def changed_shape(self) -> CursorImage | None:
        with self._lock:
            shape = self._shape
            if shape is None or shape.serial == self._returned:
                return None
            self._returned = shape.serial
            return shape

    def close(self) -> None:
        with self._lock:
            self._notify = lambda: None
