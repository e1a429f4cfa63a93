"""Keys and pointer events through XTEST on a connection of their own, without a round trip to the X server.

pynput ends every XTEST call with an ``XSync`` (a request and its reply), so the session handed each event
to its input thread and waited for it there: two thread hand-offs and an X round trip an event. An event
is one 36-byte XTEST request — a keycode from the server's own keyboard map, a position, a button — whose
only possible error (a value outside the server's ranges) cannot happen for values taken from that map and
clamped to the screen; so :class:`XTestInput` queues the request and flushes it, which python-xlib does
without blocking (one ``select`` with no timeout, then whatever the socket takes; the rest goes with the
next flush). That is cheap enough to run on the event loop: typing through the relay (10 keys/s) cost the
agent 2.2–2.6 % of a core instead of 2.5–3.4 % (nine paired runs of ``benchmarks/screen.py --via-server
--only typing``, lower in every pair).

Should the X server stop reading, unsent requests pile up in python-xlib's buffer; past
:data:`MAX_BACKLOG` bytes every call declines (returns False) and the caller falls back to pynput in its
input thread, which blocks there and not on the loop. Keyboard-map changes (``MappingNotify``, sent to
every client) are read after each flush, so keycodes follow a layout switch.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: Unsent bytes (about a hundred events) beyond which events go the blocking way instead.
MAX_BACKLOG = 4096
#: X pointer buttons of the wheel: up, down, left, right.
WHEEL_UP, WHEEL_DOWN, WHEEL_LEFT, WHEEL_RIGHT = 4, 5, 6, 7
#: Wheel clicks sent in one event at most this way (a larger turn goes through pynput).
MAX_WHEEL_CLICKS = 16


class XTestUnavailable(Exception):
    """No display, or a display without XTEST."""


class XTestInput:
    """XTEST events on one X display. Not thread-safe: the caller serialises calls."""

    def __init__(self, display: str | None) -> None:
        from Xlib import X
        from Xlib import error as xerror
        from Xlib.ext import xtest

        from .screen.xdisplay import open_display

        try:
            self._dpy: Any = open_display(display)
        except (xerror.DisplayError, OSError) as exc:
            raise XTestUnavailable(f"cannot open X display {display!r}: {exc}") from exc
        if not self._dpy.has_extension("XTEST"):
            self._dpy.close()
            raise XTestUnavailable(f"display {display or '$DISPLAY'} has no XTEST extension")
        self._dpy.set_error_handler(self._on_error)
        self._fake_input = xtest.fake_input
        self._x = X
        self._queue: Any = self._dpy.display  # python-xlib's connection: its send buffer and event queue
        self.errors = 0

    def keycode(self, keysym: int) -> int:
        """The key that makes ``keysym`` on the server's current map (0: none does)."""
        return int(self._dpy.keysym_to_keycode(keysym))

    def key(self, keysym: int, down: bool) -> bool:
        """Press or release the key of ``keysym`` now; False (nothing sent) when there is no such key on the
        map or the server has stopped reading."""
        keycode = self.keycode(keysym)
        if not keycode or self._backlogged():
            return False
        self._fake_input(self._dpy, self._x.KeyPress if down else self._x.KeyRelease, keycode)
        self._flush()
        return True

    def move(self, x: int, y: int) -> bool:
        """Put the pointer at (x, y) of the X screen (the caller clamps it); False: the server is not reading."""
        if self._backlogged():
            return False
        self._fake_input(self._dpy, self._x.MotionNotify, x=x, y=y)
        self._flush()
        return True

    def button(self, number: int, down: bool) -> bool:
        """Press or release X pointer button ``number`` (1 left, 2 middle, 3 right)."""
        if self._backlogged():
            return False
        self._fake_input(self._dpy, self._x.ButtonPress if down else self._x.ButtonRelease, number)
        self._flush()
        return True

    def wheel(self, dx: int, dy: int) -> bool:
        """Turn the wheel: ``dy`` > 0 down, ``dx`` > 0 right, one press and release a click."""
        if abs(dx) + abs(dy) > MAX_WHEEL_CLICKS or self._backlogged():
            return False
        for count, positive, negative in ((dy, WHEEL_DOWN, WHEEL_UP), (dx, WHEEL_RIGHT, WHEEL_LEFT)):
            for _ in range(abs(count)):
                self._fake_input(self._dpy, self._x.ButtonPress, positive if count > 0 else negative)
                self._fake_input(self._dpy, self._x.ButtonRelease, positive if count > 0 else negative)
        self._flush()
        return True

    def sync(self) -> None:
        """Wait until the server has processed everything sent (before another connection's event, or the end)."""
        self._dpy.sync()

    def close(self) -> None:
        try:
            self._dpy.close()
        except Exception as exc:  # Xlib's error zoo once the server is gone
            log.info("closing the XTEST input connection: %s", exc)

    def _backlogged(self) -> bool:
        return len(self._queue.data_send) > MAX_BACKLOG

    def _flush(self) -> None:
        self._dpy.flush()
        if self._queue.event_queue:  # read during the flush: only MappingNotify is ever sent here
            while self._dpy.pending_events():
                event = self._dpy.next_event()
                if event.type == self._x.MappingNotify:
                    self._dpy.refresh_keyboard_mapping(event)

    def _on_error(self, error: Any, request: Any = None) -> None:
        self.errors += 1
        if self.errors <= 3:
            log.warning("X error on the XTEST input connection: %s", error)
