"""Which characters the desktop's keyboard layout can type, as XWayland mirrors it.

Mutter types a keysym through its virtual keyboard only where a key of the current layout makes it
(``NotifyKeyboardKeysym`` finds a keycode and level, or drops the event with a warning in its own log): on a
US layout ``é`` or ``ß`` sent by the technician simply never arrived. X11 (pynput) maps a spare keycode for
such a character; Wayland offers no such thing. XWayland carries the seat's layout as its X keymap, so with a
``DISPLAY`` the agent can ask before typing, and the technician is told which characters the device's layout
lacks instead of losing them without a word. Without XWayland there is no one to ask: text is sent as is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from common.outage import reason

from ..xdisplay import open_display

log = logging.getLogger(__name__)


class XKeymap:
    """The keysyms the keys of ``display``'s current keymap produce (asked afresh each time: layouts change)."""

    def __init__(self, display: str) -> None:
        self._display = display
        self._dpy: Any = None
        self._lock = threading.Lock()
        self._broken = False

    def missing(self, keysyms: Iterable[int]) -> list[int]:
        """The ``keysyms`` no key of the current layout types (none when the keymap cannot be read)."""
        wanted = list(dict.fromkeys(keysyms))
        with self._lock:
            if self._broken:
                return []
            try:
                if self._dpy is None:
                    self._dpy = open_display(self._display)
                info = self._dpy.display.info
                first, last = int(info.min_keycode), int(info.max_keycode)
                rows = self._dpy.get_keyboard_mapping(first, last - first + 1)
            except Exception as exc:  # Xlib's error zoo: no keymap to ask means no check, not no typing
                self._broken = True
                log.warning("cannot read the keyboard layout on %s (characters are typed unchecked): %s",
                            self._display, reason(exc))
                return []
        have = {int(k) for row in rows for k in row if k}
        return [k for k in wanted if k not in have]

    def close(self) -> None:
        with self._lock:
            dpy, self._dpy = self._dpy, None
        if dpy is not None:
            try:
                dpy.close()
            except Exception as exc:  # the server may be gone
                log.info("closing the keymap's X connection: %s", reason(exc))
