"""Knows when a Helpline prompt is on the device's screen, so remote input can wait for it.

A technician in control of a session could otherwise answer a prompt meant for the device
user — click *Allow* on a second session's consent prompt, or on the prompt for a mode change
of their own session. The consent UI raises the guard from before a prompt's window is created
until after it is gone (:meth:`PromptGuard.showing`); the screen session asks
:meth:`PromptGuard.suspended` right before it injects each remote event and refuses the event
while the answer is True, and releases held keys and buttons when a prompt appears
(:meth:`PromptGuard.subscribe`).

Thread-safe: the event loop raises and lowers the guard, the screen session's input thread asks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)


class PromptGuard:
    """A count of Helpline prompts on screen; remote input is suspended while it is above zero."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shown = 0
        self._listeners: list[Callable[[], None]] = []

    def suspended(self) -> bool:
        """True while any prompt is (or is about to be) on screen."""
        with self._lock:
            return self._shown > 0

    @contextlib.contextmanager
    def showing(self) -> Iterator[None]:
        """Hold for as long as a prompt may be visible: from before its window exists until it is gone."""
        with self._lock:
            self._shown += 1
            first = self._shown == 1
            listeners = list(self._listeners) if first else []
        for listener in listeners:
            try:
                listener()
            except Exception:
                log.exception("prompt listener failed")
        try:
            yield
        finally:
            with self._lock:
                self._shown -= 1

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` each time a prompt appears while none was shown; returns the unsubscriber."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe
