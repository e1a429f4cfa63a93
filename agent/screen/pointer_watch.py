"""Wake the cursor poller when the pointer moves or changes shape, instead of polling 30 times a second.

Polling the pointer every 33 ms cost an idle session ~3 % of a core (issue 13). The X
server can tell us instead: XInput 2 *raw motion* events (root window, all master
devices: every physical or XTest move) and XFixes *cursor notify* (a new cursor image).
:class:`XPointerWatch` selects both on its own connection and calls ``notify`` from its
reader thread; the session then reads position and shape as before. Warps
(``XWarpPointer``) produce no raw event, so the session still looks slowly
(:data:`agent.screen.session.CURSOR_IDLE_PERIOD_S`). Where XInput 2 is missing,
:func:`open_pointer_watch` returns None and the session polls at the old rate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from common.outage import reason

from .xevents import RawEvents, XEventThread

log = logging.getLogger(__name__)


class PointerWatch(Protocol):
    def start(self, notify: Callable[[], None]) -> None: ...

    def close(self) -> None: ...


class PointerWatchUnavailable(Exception):
    """The display cannot report pointer motion events."""


class XPointerWatch:
    """XI2 raw motion + XFixes cursor notify on the root window of ``display``."""

    def __init__(self, display: str | None = None) -> None:
        from Xlib import error as xerror
        from Xlib.ext import xfixes, xinput

        from .xdisplay import open_display

        try:
            dpy: Any = open_display(display)
        except (xerror.DisplayError, OSError) as exc:
            raise PointerWatchUnavailable(f"cannot open X display {display!r}: {reason(exc)}") from exc
        try:
            if not dpy.has_extension("XInputExtension"):
                raise PointerWatchUnavailable("no XInput extension")
            # python-xlib's xinput_query_version announces 2.0, where raw events reach only
            # grabbing clients; announce 2.2 (raw events on the root for everyone since 2.1).
            version = xinput.XIQueryVersion(display=dpy.display, opcode=dpy.display.get_extension_major(xinput.extname),
                                            major_version=2, minor_version=2)
            if (version.major_version, version.minor_version) < (2, 1):
                raise PointerWatchUnavailable(
                    f"XInput {version.major_version}.{version.minor_version} has no raw events")
            root = dpy.screen().root
            root.xinput_select_events([(xinput.AllMasterDevices, xinput.RawMotionMask)])
            if dpy.has_extension("XFIXES"):
                dpy.xfixes_query_version()
                dpy.xfixes_select_cursor_input(root, xfixes.XFixesDisplayCursorNotifyMask)
            # Any event is a reason to look (nothing in it is read): raw, not through python-xlib's parser,
            # which spent more on an XInput 2 raw motion event than the look itself.
            raw = RawEvents(dpy)
        except PointerWatchUnavailable:
            dpy.close()
            raise
        except Exception as exc:  # Xlib's error zoo
            dpy.close()
            raise PointerWatchUnavailable(f"selecting pointer events failed: {reason(exc)}") from exc
        self._reader = XEventThread(dpy, lambda events: True, "screen-pointer", raw=raw)

    def start(self, notify: Callable[[], None]) -> None:
        self._reader.start(notify)

    def close(self) -> None:
        self._reader.close()


def open_pointer_watch(display: str | None) -> XPointerWatch | None:
    """The event source for ``display``, or None (logged: the cursor is polled every 33 ms)."""
    try:
        return XPointerWatch(display)
    except PointerWatchUnavailable as exc:
        log.info("pointer motion events unavailable, polling the pointer: %s", exc)
        return None
