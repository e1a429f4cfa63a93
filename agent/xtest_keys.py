"""Key presses and releases through XTEST on a connection of their own, without a round trip to the X server.

pynput ends every XTEST call with an ``XSync`` (a request and its reply), so the session hands each key to
its input thread and waits for it there: two thread hand-offs and two X round trips a keystroke. A key is
one 36-byte XTEST request whose keycode comes from the server's own keyboard map, and its only possible
error (a keycode outside the map) cannot happen for one taken from that map; so :class:`XTestKeys` queues
the request and flushes it, which python-xlib does without blocking (one ``select`` with no timeout, then
whatever the socket takes; the rest goes with the next flush). That is cheap enough to run on the event
loop: typing through the relay (10 keys/s) cost the agent 2.2–2.6 % of a core instead of 2.5–3.4 % (nine
paired runs of ``benchmarks/screen.py --via-server --only typing``, lower in every pair).

Should the X server stop reading, unsent requests pile up in python-xlib's buffer; past
:data:`MAX_BACKLOG` bytes :meth:`XTestKeys.send` declines and the caller falls back to pynput in its input
thread, which blocks there and not on the loop. Keyboard-map changes (``MappingNotify``, sent to every
client) are read after each flush, so keycodes follow a layout switch.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: Unsent bytes (about a hundred key events) beyond which keys go the blocking way instead.
MAX_BACKLOG = 4096


class XTestUnavailable(Exception):
    """No display, or a display without XTEST."""


class XTestKeys:
    """XTEST key events on one X display. Not thread-safe: the caller serialises calls."""

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
        self._press, self._release, self._mapping = X.KeyPress, X.KeyRelease, X.MappingNotify
        self._queue: Any = self._dpy.display  # python-xlib's connection: its send buffer and event queue
        self.errors = 0

    def keycode(self, keysym: int) -> int:
        """The key that makes ``keysym`` on the server's current map (0: none does)."""
        return int(self._dpy.keysym_to_keycode(keysym))

    def send(self, keysym: int, down: bool) -> bool:
        """Press or release the key of ``keysym`` now; False when this path cannot (no such key on the map,
        or the server has stopped reading): the caller uses pynput for it instead."""
        keycode = self.keycode(keysym)
        if not keycode or len(self._queue.data_send) > MAX_BACKLOG:
            return False
        self._fake_input(self._dpy, self._press if down else self._release, keycode)
        self._dpy.flush()
        if self._queue.event_queue:  # read during the flush: only MappingNotify is ever sent here
            self._follow_mapping()
        return True

    def sync(self) -> None:
        """Wait until the server has processed everything sent (before the connection closes)."""
        self._dpy.sync()

    def close(self) -> None:
        try:
            self._dpy.close()
        except Exception as exc:  # Xlib's error zoo once the server is gone
            log.info("closing the XTEST key connection: %s", exc)

    def _follow_mapping(self) -> None:
        while self._dpy.pending_events():
            event = self._dpy.next_event()
            if event.type == self._mapping:
                self._dpy.refresh_keyboard_mapping(event)

    def _on_error(self, error: Any, request: Any = None) -> None:
        self.errors += 1
        if self.errors <= 3:
            log.warning("X error on the XTEST key connection: %s", error)
