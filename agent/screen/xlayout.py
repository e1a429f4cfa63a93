"""Notice when an X display's monitor layout changes during a session (a laptop docked, a monitor unplugged).

The session reads the monitor list when it starts; :class:`XLayoutWatch` tells it when that list
is stale. It selects RandR's screen, CRTC and output change events on the root window of its own
connection (a real hot-plug or mode change arrives at once), and — because RandR 1.5 sends no event
when a client defines or deletes a monitor (``xrandr --setmonitor``/``--delmonitor``) — it also
reads the monitor list once every :data:`CHECK_PERIOD_S` seconds: one ``RRGetMonitors`` and one
``GetGeometry`` round trip, compared with the last (no pixels are read). A change is reported only
once the layout has held still for :data:`SETTLE_S` (a dock brings several changes in a row).
``notify`` is called from the watch's thread; the grabber then re-reads its list between two frames.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable
from typing import Any

from common.outage import reason

log = logging.getLogger(__name__)

#: The monitor list is compared with the last this often, for changes RandR sends no event for.
CHECK_PERIOD_S = 1.0
#: A change is reported once the layout read this long after it is the same (debounce).
SETTLE_S = 0.25

Layout = tuple[tuple[int, int], tuple[tuple[int, int, int, int, bool], ...]]


class XLayoutUnavailable(Exception):
    """The display cannot be watched (it cannot be opened)."""


class XLayoutWatch:
    """RandR events plus a once-a-second monitor-list check on ``display``, in a daemon thread."""

    def __init__(self, display: str | None = None, *, period_s: float = CHECK_PERIOD_S,
                 settle_s: float = SETTLE_S) -> None:
        from Xlib import error as xerror

        from .xdisplay import open_display

        try:
            self._dpy: Any = open_display(display)
        except (xerror.DisplayError, OSError) as exc:
            raise XLayoutUnavailable(f"cannot open X display {display!r}: {reason(exc)}") from exc
        self._period = period_s
        self._settle = settle_s
        self._randr = False
        try:
            if self._dpy.has_extension("RANDR"):
                from Xlib.ext import randr

                version = self._dpy.xrandr_query_version()
                self._randr = (version.major_version, version.minor_version) >= (1, 5)
                self._dpy.screen().root.xrandr_select_input(
                    randr.RRScreenChangeNotifyMask | randr.RRCrtcChangeNotifyMask | randr.RROutputChangeNotifyMask)
                self._dpy.flush()
            self._last = self._read()
        except Exception as exc:  # Xlib's error zoo
            self._dpy.close()
            raise XLayoutUnavailable(f"reading the monitor layout failed: {reason(exc)}") from exc
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: Layout reads done (tests and the cost estimate in the README use it).
        self.checks = 0

    def _read(self) -> Layout:
        """The root's size and the active RandR monitors (x, y, w, h, primary): what a grabber's list comes from."""
        root = self._dpy.screen().root
        geometry = root.get_geometry()
        monitors: tuple[tuple[int, int, int, int, bool], ...] = ()
        if self._randr:
            reply = root.xrandr_get_monitors(is_active=True)
            monitors = tuple((m.x, m.y, m.width_in_pixels, m.height_in_pixels, bool(m.primary))
                             for m in reply.monitors)
        return (geometry.width, geometry.height), monitors

    def start(self, notify: Callable[[], None]) -> None:
        self._thread = threading.Thread(target=self._run, args=(notify,), name="screen-layout", daemon=True)
        self._thread.start()

    def _wait(self, timeout: float) -> bool:
        """Sleep until X events, ``timeout`` or close; True when closed. Pending events are read and dropped."""
        fd = self._dpy.fileno()
        readable, _, _ = select.select([fd, self._wake_r], [], [], timeout)
        if self._wake_r in readable:
            return True
        for _ in range(self._dpy.pending_events()):  # raises once the server has closed the connection
            self._dpy.next_event()
        return False

    def _run(self, notify: Callable[[], None]) -> None:
        try:
            while not self._wait(self._period):
                self.checks += 1
                seen = self._read()
                if seen == self._last:
                    continue
                while True:  # debounce: report once it holds still
                    if self._wait(self._settle):
                        return
                    self.checks += 1
                    again = self._read()
                    if again == seen:
                        break
                    seen = again
                if seen != self._last:
                    log.info("monitor layout changed: screen %s, monitors %s", seen[0], list(seen[1]))
                    self._last = seen
                    notify()
        except Exception as exc:  # the connection is unusable from here on: the layout is no longer followed
            if not self._closed:
                log.warning("monitor layout watch stopped: %s", reason(exc))

    def close(self) -> None:
        """Stop the thread and close the connection; idempotent."""
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self._dpy.close()
        except Exception as exc:  # the server may be gone already
            log.info("monitor layout watch: closing the X connection: %s", reason(exc))
        os.close(self._wake_r)
        os.close(self._wake_w)


def open_layout_watch(display: str | None) -> XLayoutWatch | None:
    """The watch for ``display``, or None (logged: the monitor list is then read at start and on a select only)."""
    try:
        return XLayoutWatch(display)
    except XLayoutUnavailable as exc:
        log.info("monitor layout changes will not be followed: %s", exc)
        return None
