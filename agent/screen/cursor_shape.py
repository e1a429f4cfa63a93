"""The pointer's current image, so the viewer can draw the real cursor (mss frames carry none).

On X11 the XFixes extension gives the displayed cursor as premultiplied ARGB plus a
*cursor serial* that changes whenever another cursor is shown. :class:`XFixesCursorShapes`
selects XFixes cursor-notify events on the root window and fetches the image only when
such an event arrived and the serial differs from the one last returned, so a still
cursor costs one ``XPending`` per poll. Where XFixes (or libX11) is missing,
:func:`open_cursor_shapes` returns None and the viewer draws its default arrow.

Everything here is called from one thread at a time (the session's input thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from protocol.stream import MAX_CURSOR_SIDE

log = logging.getLogger(__name__)

_XFIXES_CURSOR_NOTIFY = 1  # XFixesCursorNotify, relative to the extension's event base
_XFIXES_DISPLAY_CURSOR_NOTIFY_MASK = 1


@dataclass(frozen=True, slots=True)
class CursorImage:
    """One cursor shape: straight-alpha RGBA rows, hotspot inside the image."""

    w: int
    h: int
    hot_x: int
    hot_y: int
    rgba: bytes
    serial: int


class CursorShapeSource(Protocol):
    def changed_shape(self) -> CursorImage | None:
        """The displayed cursor when it differs from the one last returned, else None. Never raises."""
        ...

    def close(self) -> None: ...


class CursorShapeUnavailable(Exception):
    """XFixes cursor images cannot be read on this display."""


class _XFixesCursorImage(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_short),
        ("y", ctypes.c_short),
        ("width", ctypes.c_ushort),
        ("height", ctypes.c_ushort),
        ("xhot", ctypes.c_ushort),
        ("yhot", ctypes.c_ushort),
        ("cursor_serial", ctypes.c_ulong),
        ("pixels", ctypes.POINTER(ctypes.c_ulong)),
        ("atom", ctypes.c_ulong),
        ("name", ctypes.c_char_p),
    ]


class _XEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("pad", ctypes.c_long * 24)]  # XEvent is a union of 24 longs


def _load(names: tuple[str, ...]) -> ctypes.CDLL:
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError as exc:
            log.debug("cannot load %s: %s", name, exc)
    raise CursorShapeUnavailable(f"none of {', '.join(names)} can be loaded")


def _bind(x11: ctypes.CDLL, xfixes: ctypes.CDLL) -> None:
    vp, c_int_p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)
    x11.XOpenDisplay.argtypes, x11.XOpenDisplay.restype = [ctypes.c_char_p], vp
    x11.XCloseDisplay.argtypes, x11.XCloseDisplay.restype = [vp], ctypes.c_int
    x11.XDefaultRootWindow.argtypes, x11.XDefaultRootWindow.restype = [vp], ctypes.c_ulong
    x11.XPending.argtypes, x11.XPending.restype = [vp], ctypes.c_int
    x11.XNextEvent.argtypes, x11.XNextEvent.restype = [vp, ctypes.POINTER(_XEvent)], ctypes.c_int
    x11.XFlush.argtypes, x11.XFlush.restype = [vp], ctypes.c_int
    x11.XFree.argtypes, x11.XFree.restype = [vp], ctypes.c_int
    xfixes.XFixesQueryExtension.argtypes, xfixes.XFixesQueryExtension.restype = [vp, c_int_p, c_int_p], ctypes.c_int
    xfixes.XFixesQueryVersion.argtypes, xfixes.XFixesQueryVersion.restype = [vp, c_int_p, c_int_p], ctypes.c_int
    xfixes.XFixesSelectCursorInput.argtypes = [vp, ctypes.c_ulong, ctypes.c_ulong]
    xfixes.XFixesSelectCursorInput.restype = None
    xfixes.XFixesGetCursorImage.argtypes = [vp]
    xfixes.XFixesGetCursorImage.restype = ctypes.POINTER(_XFixesCursorImage)


def argb_to_rgba(argb: np.ndarray, w: int, h: int) -> bytes:
    """Premultiplied ARGB values (one per pixel, as XFixes gives them) → straight-alpha RGBA bytes."""
    bgra = np.ascontiguousarray(argb, dtype="<u4").view(np.uint8).reshape(h, w, 4).astype(np.uint32)
    alpha = bgra[:, :, 3:4]
    straight = np.where(alpha > 0, np.minimum(bgra[:, :, :3] * 255 // np.maximum(alpha, 1), 255), 0)
    rgba = np.concatenate([straight[:, :, ::-1], alpha], axis=2).astype(np.uint8)
    return rgba.tobytes()


class XFixesCursorShapes:
    """Cursor images from the XFixes extension of ``display`` (its own X connection)."""

    def __init__(self, display: str | None = None) -> None:
        self._x11 = _load(("libX11.so.6", ctypes.util.find_library("X11") or "libX11.so"))
        self._xfixes = _load(("libXfixes.so.3", ctypes.util.find_library("Xfixes") or "libXfixes.so"))
        _bind(self._x11, self._xfixes)
        self._dpy: int | None = self._x11.XOpenDisplay(display.encode() if display else None)
        if not self._dpy:
            raise CursorShapeUnavailable(f"cannot open X display {display!r}")
        event_base, error_base = ctypes.c_int(), ctypes.c_int()
        major, minor = ctypes.c_int(), ctypes.c_int()
        if not self._xfixes.XFixesQueryExtension(self._dpy, ctypes.byref(event_base), ctypes.byref(error_base)):
            self.close()
            raise CursorShapeUnavailable(f"display {display!r} has no XFixes extension")
        self._xfixes.XFixesQueryVersion(self._dpy, ctypes.byref(major), ctypes.byref(minor))
        if major.value < 1:
            self.close()
            raise CursorShapeUnavailable(f"XFixes {major.value}.{minor.value} has no cursor images")
        self._notify_type = event_base.value + _XFIXES_CURSOR_NOTIFY
        root = self._x11.XDefaultRootWindow(self._dpy)
        self._xfixes.XFixesSelectCursorInput(self._dpy, root, _XFIXES_DISPLAY_CURSOR_NOTIFY_MASK)
        self._x11.XFlush(self._dpy)
        self._dirty = True  # nothing returned yet: the first call reads the image
        self._serial: int | None = None
        self.images_read = 0

    def changed_shape(self) -> CursorImage | None:
        if not self._dpy:
            return None
        try:
            self._drain_events()
            if not self._dirty:
                return None
            self._dirty = False
            return self._read_if_new()
        except Exception:  # a broken X connection must not end the session: stop reading shapes
            log.exception("reading the cursor image failed; cursor shapes disabled")
            self.close()
            return None

    def _drain_events(self) -> None:
        event = _XEvent()
        while self._x11.XPending(self._dpy) > 0:
            self._x11.XNextEvent(self._dpy, ctypes.byref(event))
            if event.type == self._notify_type:
                self._dirty = True

    def _read_if_new(self) -> CursorImage | None:
        image_p = self._xfixes.XFixesGetCursorImage(self._dpy)
        if not image_p:
            log.info("XFixesGetCursorImage returned nothing")
            return None
        try:
            image = image_p.contents
            self.images_read += 1
            if image.cursor_serial == self._serial or not image.width or not image.height:
                return None
            w, h = int(image.width), int(image.height)
            argb = np.ctypeslib.as_array(image.pixels, shape=(h * w,)).reshape(h, w)
            hot_x, hot_y, serial = int(image.xhot), int(image.yhot), int(image.cursor_serial)
            # Crop oversized cursors around the hotspot's corner; keep the hotspot inside.
            cw, ch = min(w, MAX_CURSOR_SIDE), min(h, MAX_CURSOR_SIDE)
            argb = argb[:ch, :cw].astype(np.uint32)
        finally:
            self._x11.XFree(ctypes.cast(image_p, ctypes.c_void_p))
        self._serial = serial
        return CursorImage(cw, ch, min(hot_x, cw - 1), min(hot_y, ch - 1), argb_to_rgba(argb, cw, ch), serial)

    def close(self) -> None:
        if self._dpy:
            self._x11.XCloseDisplay(self._dpy)
            self._dpy = None


def open_cursor_shapes(display: str | None) -> XFixesCursorShapes | None:
    """The XFixes source for ``display``, or None where cursor images are unavailable."""
    try:
        return XFixesCursorShapes(display)
    except CursorShapeUnavailable as exc:
        log.info("cursor shapes unavailable, the viewer draws a default arrow: %s", exc)
        return None
