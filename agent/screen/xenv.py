"""Create pynput controllers for a given X display.

pynput reads ``DISPLAY`` when it is imported and when a controller is created, so
both must happen while ``DISPLAY`` names the wanted display. ``pynput_controllers``
does that under a lock and restores the environment afterwards, so several displays
can be served from one process (tests do).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

log = logging.getLogger(__name__)
_lock = threading.Lock()


def pynput_controllers(display: str | None, *, with_keyboard: bool = True) -> tuple[Any, Any, Any]:
    """(mouse.Controller(), keyboard.Controller() or None, pynput.keyboard) bound to ``display``."""
    with _lock:
        previous = os.environ.get("DISPLAY")
        if display:
            os.environ["DISPLAY"] = display
        try:
            from pynput import keyboard, mouse

            return mouse.Controller(), keyboard.Controller() if with_keyboard else None, keyboard
        finally:
            if previous is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = previous


def close_controller(controller: Any) -> None:
    """Close a pynput controller's X connection now rather than in ``__del__`` (after X is gone)."""
    display = getattr(controller, "_display", None)
    if display is None:
        return
    try:
        display.close()
    except Exception as exc:  # Xlib raises its own zoo once the server is gone
        log.info("closing X connection of %s: %s", type(controller).__name__, exc)
    # pynput's __del__ closes again; make that a no-op.
    controller._display = _ClosedDisplay()


class _ClosedDisplay:
    def close(self) -> None:
        return None
