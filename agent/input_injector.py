"""Inject the viewer's input into the X display through XTEST.

Keys on the server's keyboard map and pointer events are sent at once, from the event loop, on a
connection of their own (:mod:`agent.xtest_input`: no round trip to the server an event); text, keys
the map lacks, and everything while the server is not reading or the input thread is busy with it go
through pynput in the session's input thread. Keys arrive as browser ``KeyboardEvent.code`` values
(physical keys) and are mapped to X keysyms; characters without a code come as ``input.text`` and are typed. Pointer
coordinates are in the selected monitor's pixel space and are offset into the X
screen and clamped to the monitor. Every key and button still held when the session
ends is released (``release_all``), so a dropped tunnel never leaves Ctrl stuck down.

While a Helpline prompt is on the user's screen, remote input is suspended: the screen session
asks its :class:`InputGate` (the consent UI's prompt guard) right before each injection and
refuses the event with :class:`InputSuspended`, so a technician cannot answer a prompt meant
for the user.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from protocol.stream import InputKey, InputMessage, InputMouse, InputText

from .xtest_input import XTestInput, XTestUnavailable

if TYPE_CHECKING:  # agent.screen imports this module: avoid the cycle at runtime
    from .screen.capture import Monitor

log = logging.getLogger(__name__)


class InputRefused(ValueError):
    """An input event that cannot be injected (unknown key code, bad button …)."""


class InputSuspended(InputRefused):
    """Remote input waits: a Helpline prompt is on the user's screen and only the user may answer it."""


class InputGate(Protocol):
    """Says when remote input must wait (met by :class:`agent.consent.guard.PromptGuard`)."""

    def suspended(self) -> bool:
        """True while a prompt is on screen."""
        ...

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` when a prompt appears; returns the unsubscriber."""
        ...


def _keysyms() -> dict[str, int]:
    table: dict[str, int] = {}
    for i in range(26):
        table[f"Key{chr(65 + i)}"] = 0x61 + i  # XK_a …
    for i in range(10):
        table[f"Digit{i}"] = 0x30 + i
        table[f"Numpad{i}"] = 0xFFB0 + i  # XK_KP_0 …
    for i in range(1, 13):
        table[f"F{i}"] = 0xFFBE + i - 1
    table.update(
        Enter=0xFF0D, NumpadEnter=0xFF8D, Backspace=0xFF08, Tab=0xFF09, Escape=0xFF1B, Space=0x20,
        Delete=0xFFFF, Insert=0xFF63, Home=0xFF50, End=0xFF57, PageUp=0xFF55, PageDown=0xFF56,
        ArrowLeft=0xFF51, ArrowUp=0xFF52, ArrowRight=0xFF53, ArrowDown=0xFF54,
        ShiftLeft=0xFFE1, ShiftRight=0xFFE2, ControlLeft=0xFFE3, ControlRight=0xFFE4,
        AltLeft=0xFFE9, AltRight=0xFFEA, MetaLeft=0xFFEB, MetaRight=0xFFEC, CapsLock=0xFFE5,
        NumLock=0xFF7F, ScrollLock=0xFF14, Pause=0xFF13, PrintScreen=0xFF61, ContextMenu=0xFF67,
        Minus=0x2D, Equal=0x3D, BracketLeft=0x5B, BracketRight=0x5D, Backslash=0x5C, IntlBackslash=0x3C,
        Semicolon=0x3B, Quote=0x27, Backquote=0x60, Comma=0x2C, Period=0x2E, Slash=0x2F,
        NumpadAdd=0xFFAB, NumpadSubtract=0xFFAD, NumpadMultiply=0xFFAA, NumpadDivide=0xFFAF,
        NumpadDecimal=0xFFAE,
    )
    return table


#: KeyboardEvent.code → X keysym.
KEYSYMS: dict[str, int] = _keysyms()


class InputInjector(Protocol):
    def inject(self, message: InputMessage, monitor: Monitor) -> None:
        """Inject one event; raise :class:`InputRefused` if it cannot be. May block: called in the input thread."""
        ...

    def inject_now(self, message: InputMessage, monitor: Monitor) -> bool:
        """Inject one event at once on the caller's thread (the event loop) where that cannot block; False
        (nothing done) otherwise: the caller then hands it to :meth:`inject` in the input thread."""
        ...

    def release_all(self) -> None:
        """Release every key and button still held (session end)."""
        ...

    def close(self) -> None:
        """Drop the X connections."""
        ...


class PynputInjector:
    """XTEST injection on one display: direct where it cannot block, else pynput's controllers (thread-safe)."""

    def __init__(self, display: str | None = None) -> None:
        from .screen.xenv import pynput_controllers

        self._mouse, self._keyboard, keyboard_module = pynput_controllers(display)
        self._direct: XTestInput | None = None  # events without pynput's round trips (None: pynput does all)
        #: Events went out on that connection since the server last confirmed it: pynput's next event (on other
        #: connections, which the server may read first) waits for that confirmation.
        self._unconfirmed = False
        try:
            self._direct = XTestInput(display)
        except XTestUnavailable as exc:
            log.info("input goes through pynput only: %s", exc)
        from pynput.mouse import Button

        self._key_code_cls: Any = keyboard_module.KeyCode
        self._buttons: dict[int, Any] = {0: Button.left, 1: Button.middle, 2: Button.right}
        self._held_keys: set[str] = set()
        self._held_buttons: set[int] = set()
        self._lock = threading.Lock()

    def inject(self, message: InputMessage, monitor: Monitor) -> None:
        with self._lock:
            self._confirm_direct()
            if isinstance(message, InputMouse):
                self._mouse_event(message, monitor)
            elif isinstance(message, InputKey):
                self._key_event(message)
            elif isinstance(message, InputText):
                self._keyboard.type(message.text)
            else:
                raise InputRefused(f"not an input message: {type(message).__name__}")

    def inject_now(self, message: InputMessage, monitor: Monitor) -> bool:
        """Keys on the server's keyboard map and pointer events go at once (:mod:`agent.xtest_input`); text
        (pynput types it, borrowing keycodes), False."""
        direct = self._direct
        if direct is None or isinstance(message, InputText):
            return False
        # The input thread may hold the lock while it waits on the server (pynput, a release, a confirmation):
        # then this event goes there too, after it, and the event loop never waits on the display.
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if isinstance(message, InputKey):
                keysym = KEYSYMS.get(message.code)
                if keysym is None:
                    raise InputRefused(f"key code {message.code!r} not supported")
                down = message.action == "down"
                if not direct.key(keysym, down):
                    return False
                (self._held_keys.add if down else self._held_keys.discard)(message.code)
            elif isinstance(message, InputMouse):
                if not self._pointer_now(direct, message, monitor):
                    return False
            else:
                return False
            self._unconfirmed = True
            return True
        finally:
            self._lock.release()

    def _pointer_now(self, direct: XTestInput, m: InputMouse, monitor: Monitor) -> bool:
        x, y = self._clamped(m, monitor)
        if m.action == "move":
            return direct.move(x, y)
        if m.action == "wheel":
            if not m.dx and not m.dy:
                return True
            if not direct.move(x, y):
                return False
            self._unconfirmed = True
            return direct.wheel(m.dx, m.dy)
        button = self._buttons.get(m.button)
        if button is None:
            raise InputRefused(f"mouse button {m.button} not supported")
        down = m.action == "down"
        if not direct.move(x, y):
            return False
        self._unconfirmed = True  # the move went direct even if the button now goes through pynput
        if not direct.button(int(button.value), down):
            return False
        (self._held_buttons.add if down else self._held_buttons.discard)(m.button)
        return True

    def _confirm_direct(self) -> None:
        """Before an event on pynput's connections: the events sent at once are processed (one round trip when
        text follows keys or the mouse; none otherwise)."""
        if self._direct is not None and self._unconfirmed:
            self._direct.sync()
            self._unconfirmed = False

    @staticmethod
    def _clamped(m: InputMouse, monitor: Monitor) -> tuple[int, int]:
        """The X screen position of a monitor pixel, kept inside the monitor."""
        return monitor.x + min(max(m.x, 0), monitor.w - 1), monitor.y + min(max(m.y, 0), monitor.h - 1)

    def _mouse_event(self, m: InputMouse, monitor: Monitor) -> None:
        self._mouse.position = self._clamped(m, monitor)
        if m.action == "move":
            return
        if m.action == "wheel":
            if m.dx or m.dy:
                self._mouse.scroll(m.dx, -m.dy)  # pynput: positive dy scrolls up; ours: down
            return
        button = self._buttons.get(m.button)
        if button is None:
            raise InputRefused(f"mouse button {m.button} not supported")
        if m.action == "down":
            self._mouse.press(button)
            self._held_buttons.add(m.button)
        else:
            self._mouse.release(button)
            self._held_buttons.discard(m.button)

    def _key_event(self, k: InputKey) -> None:
        keysym = KEYSYMS.get(k.code)
        if keysym is None:
            raise InputRefused(f"key code {k.code!r} not supported")
        key = self._key_code_cls.from_vk(keysym)
        if k.action == "down":
            self._keyboard.press(key)
            self._held_keys.add(k.code)
        else:
            self._keyboard.release(key)
            self._held_keys.discard(k.code)

    def release_all(self) -> None:
        with self._lock:
            for code in sorted(self._held_keys):
                try:
                    # On the direct connection where it can (one connection keeps the order).
                    if self._direct is None or not self._direct.key(KEYSYMS[code], False):
                        self._keyboard.release(self._key_code_cls.from_vk(KEYSYMS[code]))
                    else:
                        self._unconfirmed = True
                except Exception as exc:  # the display may already be gone at session end
                    log.warning("could not release key %s: %s", code, exc)
            for number in sorted(self._held_buttons):
                try:
                    button = self._buttons[number]
                    if self._direct is None or not self._direct.button(int(button.value), False):
                        self._mouse.release(button)
                    else:
                        self._unconfirmed = True
                except Exception as exc:
                    log.warning("could not release mouse button %d: %s", number, exc)
            try:
                self._confirm_direct()  # released before the session (and perhaps the connection) ends
            except Exception as exc:
                log.warning("could not confirm the releases: %s", exc)
            self._held_keys.clear()
            self._held_buttons.clear()

    def close(self) -> None:
        from .screen.xenv import close_controller

        with self._lock:
            close_controller(self._mouse)
            close_controller(self._keyboard)
            if self._direct is not None:
                self._direct.close()
