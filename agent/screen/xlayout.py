"""Notice when an X display's monitor layout changes during a session (a laptop docked, a monitor unplugged).

The session reads the monitor list when it starts; :class:`XLayoutWatch` tells it when that list
is stale. It selects RandR's screen, CRTC and output change events on the root window of its own
connection (a real hot-plug or mode change arrives at once), and — because RandR 1.5 sends no event
when a client defines or deletes a monitor (``xrandr --setmonitor``/``--delmonitor``) — it also
reads the monitor list once every :data:`CHECK_PERIOD_S` seconds: one ``RRGetMonitors`` and one
``GetGeometry`` round trip, compared with the last (no pixels are read). A change is reported only
once the layout has held still for :data:`SETTLE_S` (a dock brings several changes in a row).
``notify`` is called from the watch's thread (an :class:`~agent.screen.xevents.XEventThread` whose
``tick`` is the check); the grabber then re-reads its list between two frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from common.outage import reason

from .xevents import XEventThread

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
        #: A changed layout read once, not yet seen the same ``settle_s`` later (None: steady).
        self._settling: Layout | None = None
        # RandR events only wake the thread (they are dropped): the check after every wake-up reads the layout.
        # A lost connection only stops the watch: the layout is no longer followed, nothing to re-read.
        self._reader = XEventThread(self._dpy, lambda events: False, "screen-layout", tick=self._check,
                                    tick_s=period_s, notify_lost=False)
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
        self._reader.start(notify)

    def _check(self) -> tuple[bool, float]:
        """In the reader thread, after every wake-up: read the layout; (report a change?, seconds to the next read).

        A layout that differs from the last reported is read again ``settle_s`` later until two reads agree
        (a dock brings several changes in a row); only then, if it still differs, is it reported."""
        self.checks += 1
        seen = self._read()
        if seen != (self._last if self._settling is None else self._settling):
            self._settling = seen
            return False, self._settle
        self._settling = None
        if seen == self._last:
            return False, self._period
        log.info("monitor layout changed: screen %s, monitors %s", seen[0], list(seen[1]))
        self._last = seen
        return True, self._period

    def close(self) -> None:
        """Stop the thread and close the connection; idempotent."""
        self._reader.close()


def open_layout_watch(display: str | None) -> XLayoutWatch | None:
    """The watch for ``display``, or None (logged: the monitor list is then read at start and on a select only)."""
    try:
        return XLayoutWatch(display)
    except XLayoutUnavailable as exc:
        log.info("monitor layout changes will not be followed: %s", exc)
        return None
