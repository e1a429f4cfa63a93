"""One X connection's events, read by a thread that sleeps in ``select`` until the server writes.

Shared by the damage source, the pointer watch and the monitor-layout watch: they want "tell me
when something happened" without a timer, so an idle session costs no CPU. The handler runs in the
reader thread and returns True when the session should be woken; ``notify`` is then called (from
that thread). A dead connection calls ``on_lost`` once (and ``notify``, unless ``notify_lost`` is
False) and ends the thread. The layout watch also needs a check that no event announces: ``tick``
is called after every wake-up, events or timeout, and says when it wants to run next at the latest.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable
from typing import Any

from common.outage import reason

log = logging.getLogger(__name__)

#: A periodic check run in the reader thread: (wake the session?, seconds until the next call at the latest).
Tick = Callable[[], tuple[bool, float]]


class XEventThread:
    """Reads ``dpy``'s events in a daemon thread; ``close`` stops it and closes ``dpy``.

    With ``tick``, ``select`` waits ``tick_s`` at first (None: until an event), then what ``tick`` last returned.
    """

    def __init__(self, dpy: Any, handle: Callable[[list[Any]], bool], name: str,
                 on_lost: Callable[[], None] | None = None, *, tick: Tick | None = None,
                 tick_s: float | None = None, notify_lost: bool = True) -> None:
        self.dpy = dpy
        self._handle = handle
        self._name = name
        self._on_lost = on_lost
        self._tick = tick
        self._timeout = tick_s
        self._notify_lost = notify_lost
        self._notify: Callable[[], None] | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self, notify: Callable[[], None]) -> None:
        self._notify = notify
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fd = self.dpy.fileno()
        try:
            while True:
                readable, _, _ = select.select([fd, self._wake_r], [], [], self._timeout)
                if self._wake_r in readable:
                    return
                count = self.dpy.pending_events()  # raises once the server has closed the connection
                events = [self.dpy.next_event() for _ in range(count)]
                wake = bool(events) and self._handle(events)
                if self._tick is not None:
                    ticked, self._timeout = self._tick()
                    wake |= ticked
                if wake and self._notify is not None:
                    self._notify()
        except Exception as exc:  # Xlib's error zoo: the connection is unusable from here on
            if not self._closed:
                log.warning("%s: X event reader stopped: %s", self._name, reason(exc))
                if self._on_lost is not None:
                    self._on_lost()
                if self._notify_lost and self._notify is not None:
                    self._notify()

    def close(self, before_close: Callable[[], None] | None = None) -> None:
        """Stop the thread, run ``before_close`` (e.g. free server resources), close the connection."""
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if before_close is not None:
                before_close()
            self.dpy.close()
        except Exception as exc:  # the server may be gone already
            log.info("%s: closing the X connection: %s", self._name, reason(exc))
        os.close(self._wake_r)
        os.close(self._wake_w)
