"""Inject the viewer's input through a RemoteDesktop session (an ``InputInjector``): Mutter's or the portal's.

Synthetic X input reaches only XWayland windows; the RemoteDesktop session's notifications
reach every window, native or not. The screen session calls ``inject`` from its input
thread; the D-Bus connection lives on the session's event loop, so each event is handed to
that loop and waited for (bounded by the call timeout), which keeps the events in order.
Keys are X keysyms (the same table as the X11 injector); buttons are evdev codes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol

from protocol.stream import InputKey, InputMessage, InputMouse, InputText

from ...input_injector import KEYSYMS, InputRefused
from ..capture import Monitor
from .mutter import CALL_TIMEOUT_S, MutterError
from .portal import CALL_TIMEOUT_S as PORTAL_CALL_TIMEOUT_S
from .portal import KEYBOARD, POINTER, PortalError

log = logging.getLogger(__name__)

#: How long a button or wheel event waits behind a motion that moved the pointer (a frame at 30 Hz and some).
BUTTON_AFTER_MOTION_S = 0.04
#: MouseEvent.button → linux/input-event-codes.h BTN_LEFT, BTN_MIDDLE, BTN_RIGHT.
BUTTONS = {0: 0x110, 1: 0x112, 2: 0x111}


def char_keysym(char: str) -> int:
    """The keysym of one character: Latin-1 maps to itself, the rest to 0x01000000 + code point (X11 rule)."""
    code = ord(char)
    if char == "\n":
        return KEYSYMS["Enter"]
    if char == "\t":
        return KEYSYMS["Tab"]
    return code if 0x20 <= code <= 0x7E or 0xA0 <= code <= 0xFF else 0x01000000 + code


class RemoteInput(Protocol):
    """The input half of a RemoteDesktop session (MutterSession, PortalSession); coordinates in stream pixels."""

    async def pointer_motion(self, x: float, y: float, monitor: Monitor | None = None) -> None: ...
    async def pointer_button(self, evdev_code: int, pressed: bool) -> None: ...
    async def pointer_axis_discrete(self, axis: int, steps: int) -> None: ...
    async def keysym(self, keysym: int, pressed: bool) -> None: ...
    async def tap_keysym(self, keysym: int) -> None: ...


class Keymap(Protocol):
    """Which of some keysyms the desktop's layout cannot type (keymap.XKeymap)."""

    def missing(self, keysyms: Iterable[int]) -> list[int]: ...


class MutterInjector:
    """Pointer and keyboard through ``session`` (thread-safe; calls run on ``loop``).

    ``devices`` is what the desktop granted (keyboard 1 | pointer 2; the portal's ``Start`` answer):
    an event of a device not granted is refused here with the reason, not sent to be lost or refused
    by the compositor one D-Bus round trip later.
    """

    def __init__(self, session: RemoteInput, loop: asyncio.AbstractEventLoop,
                 devices: int = KEYBOARD | POINTER, keymap: Keymap | None = None) -> None:
        self._session, self._loop = session, loop
        self._devices = devices
        #: Which characters the layout lacks (keymap.py); None: typed unchecked.
        self._keymap = keymap
        self._lock = threading.Lock()
        self._held_keys: set[int] = set()
        self._held_buttons: set[int] = set()
        #: Where the last motion put the pointer (stream pixels of that monitor), None before any.
        self._pointer: tuple[float, float, Monitor] | None = None

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            future.result(max(CALL_TIMEOUT_S, PORTAL_CALL_TIMEOUT_S) + 1)
        except (MutterError, PortalError) as exc:
            raise InputRefused(f"the compositor refused the event: {exc}") from exc
        except TimeoutError as exc:
            future.cancel()
            raise InputRefused("the compositor did not take the event in time") from exc

    def _granted(self, bit: int, name: str) -> None:
        if not self._devices & bit:
            raise InputRefused(f"the desktop did not grant remote {name} input for this session")

    def inject(self, message: InputMessage, monitor: Monitor) -> None:
        self._granted(POINTER if isinstance(message, InputMouse) else KEYBOARD,
                      "pointer" if isinstance(message, InputMouse) else "keyboard")
        with self._lock:
            if isinstance(message, InputMouse):
                self._mouse(message, monitor)
            elif isinstance(message, InputKey):
                keysym = KEYSYMS.get(message.code)
                if keysym is None:
                    raise InputRefused(f"key code {message.code!r} not supported")
                down = message.action == "down"
                self._run(self._session.keysym(keysym, down))
                (self._held_keys.add if down else self._held_keys.discard)(keysym)
            elif isinstance(message, InputText):
                keysyms = [char_keysym(char) for char in message.text]
                lacking = self._keymap.missing(keysyms) if self._keymap is not None else []
                if lacking:
                    pairs = zip(message.text, keysyms, strict=True)
                    chars = "".join(dict.fromkeys(c for c, k in pairs if k in lacking))
                    raise InputRefused(f"the device's keyboard layout has no key for {chars!r} (Wayland types only "
                                       "what a key of the layout makes): nothing of this text was typed")
                for keysym in keysyms:
                    self._run(self._session.tap_keysym(keysym))
            else:
                raise InputRefused(f"not an input message: {type(message).__name__}")

    def _mouse(self, m: InputMouse, monitor: Monitor) -> None:
        # The stream is the monitor: its pixel space is the viewer's, clamped inside it; the session moves the
        # pointer through the stream of the monitor shown (Mutter maps it into that monitor's place).
        x = min(max(m.x, 0), monitor.w - 1)
        y = min(max(m.y, 0), monitor.h - 1)
        moved = self._pointer != (x, y, monitor)
        self._pointer = (x, y, monitor)
        self._run(self._session.pointer_motion(x, y, monitor))
        if m.action == "move":
            return
        if moved:
            # Mutter finds the window under the pointer when it paints the next frame, not when the motion
            # arrives: a button or a wheel notch right behind a motion to a new place went to whatever was under
            # the pointer before (on the headless Mutter, a click on an XWayland window that a viewer sent without
            # a move first was lost: tests/test_wayland_toolkit.py). One frame's time lets it look again.
            time.sleep(BUTTON_AFTER_MOTION_S)
        if m.action == "wheel":
            if m.dy:
                self._run(self._session.pointer_axis_discrete(0, m.dy))
            if m.dx:
                self._run(self._session.pointer_axis_discrete(1, m.dx))
            return
        code = BUTTONS.get(m.button)
        if code is None:
            raise InputRefused(f"mouse button {m.button} not supported")
        down = m.action == "down"
        self._run(self._session.pointer_button(code, down))
        (self._held_buttons.add if down else self._held_buttons.discard)(code)

    def inject_now(self, message: InputMessage, monitor: Monitor) -> bool:
        """Never: every event is a D-Bus call, made in the input thread."""
        return False

    def release_all(self) -> None:
        with self._lock:
            for keysym in sorted(self._held_keys):
                try:
                    self._run(self._session.keysym(keysym, False))
                except (InputRefused, RuntimeError) as exc:  # the session may already be gone at its end
                    log.warning("could not release keysym %#x: %s", keysym, exc)
            for code in sorted(self._held_buttons):
                try:
                    self._run(self._session.pointer_button(code, False))
                except (InputRefused, RuntimeError) as exc:
                    log.warning("could not release button %#x: %s", code, exc)
            self._held_keys.clear()
            self._held_buttons.clear()

    def close(self) -> None:
        """Nothing of its own to close: the backend closes the remote-desktop session."""
