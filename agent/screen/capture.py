"""Screen capture: the ``ScreenGrabber`` seam (whole monitors or parts) and its mss implementation.

Monitor indices follow mss: 0 is the bounding box of all monitors, 1..n each monitor.
Frames are BGRA ``uint8`` arrays of shape (h, w, 4); a grabber is used from one thread
at a time (the session's capture worker).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .tiles import Rect
from .xshm_pair import XShmPair

if TYPE_CHECKING:
    from .xlayout import XLayoutWatch

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Monitor:
    """A monitor's rectangle in X screen coordinates."""

    x: int
    y: int
    w: int
    h: int
    primary: bool = False


class ScreenGrabber(Protocol):
    def monitors(self) -> list[Monitor]:
        """All monitors, index 0 = the union of all (as mss counts)."""
        ...

    def grab(self, index: int) -> Frame:
        """A fresh BGRA frame of monitor ``index`` (a new array the caller may keep)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class RegionGrabber(ScreenGrabber, Protocol):
    """A grabber that can also read part of a monitor (damage-driven capture needs it)."""

    def grab_region(self, index: int, rect: Rect) -> Frame:
        """A fresh BGRA frame of ``rect`` (in monitor ``index``'s pixel space, inside it)."""
        ...


@runtime_checkable
class ViewGrabber(ScreenGrabber, Protocol):
    """A grabber that can lend its capture buffer instead of copying it (XShm: no 8 MB copy per frame)."""

    def grab_view(self, index: int) -> Frame:
        """Monitor ``index`` as a read-only view, valid only until this grabber's next grab or close."""
        ...


@runtime_checkable
class PairedViewGrabber(ViewGrabber, Protocol):
    """A view grabber that lends two buffers in turn (:mod:`.xshm_pair`)."""

    def keeps_view(self, view: Frame) -> bool:
        """True when ``view``, the last :meth:`grab_view`'s, stays intact (and writable) through the next one."""
        ...


class MssGrabber:
    """mss (XShmGetImage when MIT-SHM works) on one X display."""

    def __init__(self, display: str | None = None) -> None:
        self._display = display
        self._mss: Any = self._open()
        self._lock = threading.Lock()
        self._layout_watch: XLayoutWatch | None = None
        #: Two segments of our own for :meth:`grab_view` (made once mss has proven XShm works).
        self._pair: XShmPair | None = None
        self._pair_failed = False
        try:
            status = self._mss.performance_status
            log.info("mss on %s: %s", display or "$DISPLAY", status() if callable(status) else status)
        except AttributeError:
            log.debug("mss has no performance_status")

    def _open(self) -> Any:
        import mss

        return mss.MSS(display=self._display) if self._display else mss.MSS()

    def monitors(self) -> list[Monitor]:
        with self._lock:
            found = self._mss.monitors
        return [
            Monitor(int(m["left"]), int(m["top"]), int(m["width"]), int(m["height"]), bool(m.get("is_primary")))
            for m in found
        ]

    def watch_layout(self, notify: Callable[[], None]) -> None:
        """Call ``notify`` (from another thread) when the display's monitors change (see agent/screen/xlayout.py)."""
        from .xlayout import open_layout_watch

        self._layout_watch = open_layout_watch(self._display)
        if self._layout_watch is not None:
            self._layout_watch.start(notify)

    def apply_layout(self, shown: int) -> int:
        """Re-read the monitors (a new mss: it keeps its list, and its XShm segment is sized for the old screen);
        the index in the new list of monitor ``shown`` — the same rectangle, else the same origin (resized) —,
        else the primary's. Called by the session between two grabs."""
        before = self.monitors()
        fresh = self._open()
        with self._lock:
            old, self._mss = self._mss, fresh
            old_pair, self._pair, self._pair_failed = self._pair, None, False
        if old_pair is not None:
            old_pair.close()
        try:
            old.close()
        except BufferError:  # a lent view still alive: the segment goes with the process
            log.debug("old mss segment still lent out at a layout change")
        after = self.monitors()
        return pick_monitor(before, after, shown)

    def grab(self, index: int) -> Frame:
        with self._lock:
            shot = self._mss.grab(self._mss.monitors[index])
        h, w = shot.height, shot.width
        return np.frombuffer(shot.raw, dtype=np.uint8).reshape(h, w, 4)

    def grab_view(self, index: int) -> Frame:
        """The shared-memory segment the X server just wrote, without mss's copy into a fresh bytearray.

        mss (10.2) copies every XShmGetImage result; at 1080p that copy (and its page faults)
        was an eighth of a motion frame's CPU. This asks for the image into mss's segment
        itself and lends it out; where that is not possible (no MIT-SHM, another mss
        backend or version) it returns an ordinary copy from :meth:`grab`.
        """
        with self._lock:
            mon = self._mss.monitors[index]
            pair = self._own_pair()
            view = pair.grab(mon["left"], mon["top"], mon["width"], mon["height"]) if pair is not None else None
            if view is None:
                view = self._shm_view(mon["left"], mon["top"], mon["width"], mon["height"])
        return view if view is not None else self.grab(index)

    def keeps_view(self, view: Frame) -> bool:
        return self._pair is not None and self._pair.lent(view)

    def _own_pair(self) -> XShmPair | None:
        """The two segments, made on first use once mss's own XShm grab has worked; None where they cannot be."""
        if self._pair is not None or self._pair_failed:
            return self._pair
        impl: Any = getattr(self._mss, "_impl", None)
        status = getattr(impl, "shm_status", None)
        size = getattr(impl, "_bufsize", None)
        if status is None or status.name != "AVAILABLE" or not isinstance(size, int):
            return None  # not proven yet (or another backend): mss's segment, copied
        try:
            self._pair = XShmPair(impl, size)
        except Exception as exc:  # memfd, mmap or the server's attach
            self._pair_failed = True
            log.info("screen capture: no XShm segments of our own (%s): the last frame is kept as a copy", exc)
        return self._pair

    def _shm_view(self, left: int, top: int, width: int, height: int) -> Frame | None:
        impl: Any = getattr(self._mss, "_impl", None)
        status = getattr(impl, "shm_status", None)
        buf, seg = getattr(impl, "_buf", None), getattr(impl, "_shmseg", None)
        if status is None or status.name != "AVAILABLE" or buf is None or seg is None:
            return None  # not yet proven (mss's own grab proves it first) or unavailable
        if width * height * 4 > len(buf):
            return None
        from mss.linux import xcb as xcb_module
        from mss.linux.base import ALL_PLANES

        xcb: Any = xcb_module  # its names are generated bindings, not declared exports
        reply = xcb.shm_get_image(
            impl.conn, impl.drawable, left, top, width, height, ALL_PLANES, xcb.ImageFormat.ZPixmap, seg, 0
        )
        if reply.depth != impl.drawable_depth:
            return None
        return np.frombuffer(buf, dtype=np.uint8, count=width * height * 4).reshape(height, width, 4)

    def grab_region(self, index: int, rect: Rect) -> Frame:
        with self._lock:
            mon = self._mss.monitors[index]
            shot = self._mss.grab(
                {"left": mon["left"] + rect.x, "top": mon["top"] + rect.y, "width": rect.w, "height": rect.h}
            )
        return np.frombuffer(shot.raw, dtype=np.uint8).reshape(shot.height, shot.width, 4)

    def close(self) -> None:
        if self._layout_watch is not None:
            self._layout_watch.close()
        with self._lock:
            if self._pair is not None:
                self._pair.close()
                self._pair = None
            try:
                self._mss.close()
            except BufferError:  # a lent view still alive: the segment goes with the process
                log.debug("mss segment still lent out at close")


def pick_monitor(before: list[Monitor], after: list[Monitor], shown: int) -> int:
    """Where the viewer goes after a layout change: 0 (all monitors) stays 0; monitor ``shown`` of ``before``
    where it is in ``after`` (same rectangle, else same origin); else the primary; else the first monitor."""
    if shown == 0 or len(after) <= 1:
        return 0
    if 0 < shown < len(before):
        was = before[shown]
        for key in (lambda m: (m.x, m.y, m.w, m.h), lambda m: (m.x, m.y)):
            found = next((i for i in range(1, len(after)) if key(after[i]) == key(was)), None)
            if found is not None:
                return found
    return next((i for i in range(1, len(after)) if after[i].primary), 1)
