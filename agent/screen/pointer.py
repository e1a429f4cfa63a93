"""Where the pointer is, so the viewer can draw it (mss frames carry no cursor)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from common.outage import reason

from .xenv import close_controller, pynput_controllers

log = logging.getLogger(__name__)


class PointerSource(Protocol):
    def position(self) -> tuple[int, int] | None:
        """Pointer position in X screen coordinates, or None when unknown."""
        ...

    def close(self) -> None: ...


class PynputPointer:
    """Reads the pointer through pynput's mouse controller (one X connection)."""

    def __init__(self, display: str | None = None) -> None:
        self._mouse: Any = pynput_controllers(display, with_keyboard=False)[0]

    def position(self) -> tuple[int, int] | None:
        try:
            x, y = self._mouse.position
        except Exception as exc:  # Xlib raises a zoo of errors once the display goes away
            log.warning("cannot read pointer position: %s", reason(exc))  # some Xlib errors have no message
            return None
        return int(x), int(y)

    def close(self) -> None:
        close_controller(self._mouse)
