"""Where the screen changed, as the display server reports it: the ``DamageSource`` seam.

Polling a 1080p screen (grab 8 MB, compare 8 MB) every few milliseconds cost the agent
30 % of a core while someone typed (issue 13). A damage source instead *pushes* the
rectangles that were drawn to: the session grabs only those, and only when they arrive.

The contract is small so that other backends plug in (Wayland's PipeWire stream carries
damage metadata with each buffer, issue 14):

* ``start(notify)`` — begin watching; ``notify()`` is called from any thread whenever new
  damage is waiting (the session turns it into an event-loop wake-up). Calls may be
  coalesced; the source never blocks on it.
* ``take()`` — everything damaged since the last ``take``, in X screen coordinates, as a
  :class:`Damage`. A source that lost track (too many rectangles, a screen resize) says
  ``full=True``; the session then compares the whole monitor.
* ``close()`` — stop watching and release the connection; idempotent.

:class:`XDamageSource` implements it with the X DAMAGE extension through python-xlib
(pure Python, already installed for pynput): a ``DamageCreate`` on the root window at
``RawRectangles`` level, read by one thread that sleeps in ``select`` on the X socket, so a
still screen costs nothing. python-xlib sets the connection up; the reports are then read raw
(:class:`~.xevents.RawEvents`: a 32-byte struct each, 0.3 ms less per report) and the
periodic ``DamageSubtract`` goes raw too. Where the server has no DAMAGE, :func:`open_damage_source`
logs why and returns None, and the session falls back to polling.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from common.outage import reason

from .tiles import Rect
from .xevents import RawEvents, XEventThread

log = logging.getLogger(__name__)

#: More pending rectangles than this collapse into ``full`` (bounded memory while a viewer lags).
MAX_PENDING_RECTS = 256
#: The X server's damage region is emptied (``DamageSubtract``) after this many events.
SUBTRACT_EVERY = 16
#: DamageNotify's area (x, y: INT16; width, height: CARD16) sits at byte 16 of the event.
_AREA = struct.Struct("=hhHH")
#: The DAMAGE extension's DamageSubtract minor opcode (damage, repair = None, parts = None: empty it all).
_DAMAGE_SUBTRACT = 3
#: An X error's minor opcode (CARD16 at byte 8).
_MINOR = struct.Struct("=H")
#: ConfigureNotify (the root's size changed).
_CONFIGURE_NOTIFY = 22


@dataclass
class Damage:
    """Damage since the last ``take``: rectangles in screen coordinates, or ``full``."""

    rects: list[Rect] = field(default_factory=list)
    full: bool = False
    #: Damage reports folded into this batch (frames coalesced while the viewer lagged).
    reports: int = 0

    def __bool__(self) -> bool:
        return self.full or bool(self.rects)


class DamageSource(Protocol):
    def start(self, notify: Callable[[], None]) -> None: ...

    def take(self) -> Damage: ...

    def close(self) -> None: ...


@runtime_checkable
class ReaderCapture(Protocol):
    """A damage source whose reader thread can run the session's capture itself (:class:`XDamageSource`).

    The session *arms* a job when it is ready for the next update and would otherwise sleep until damage
    comes: the reader then runs ``job(take())`` in its own thread as soon as a report arrives, instead of
    waking the event loop to hand the capture to the capture thread — one thread hand-off a frame where there
    were three (the wake-up, the hand-over, the result), each a few tens of microseconds and a fight for the
    GIL. The job posts its own result.
    """

    def arm(self, job: Callable[[Damage], None]) -> None:
        """Run ``job`` with the damage taken, in the reader thread, at the next report (once)."""
        ...

    def disarm(self) -> bool:
        """Take the job back: True when it had not started (it never will), False when it ran or runs."""
        ...

    def wait_idle(self, timeout: float) -> bool:
        """Block until no job is running (True), or ``timeout`` passed (False)."""
        ...


class DamageUnavailable(Exception):
    """The display cannot report damage (no DAMAGE extension, or no display)."""


class DamageAccumulator:
    """Thread-safe pending damage with a bound: the part every backend shares."""

    def __init__(self, max_rects: int = MAX_PENDING_RECTS) -> None:
        self._lock = threading.Lock()
        self._pending = Damage()
        self._max = max_rects

    def add(self, rect: Rect | None) -> bool:
        """Record one report (None = everything); True when it is the first since the last take."""
        with self._lock:
            first = not self._pending
            pending = self._pending
            pending.reports += 1
            if rect is None or len(pending.rects) >= self._max:
                pending.full, pending.rects = True, []
            elif not pending.full and rect.w > 0 and rect.h > 0:
                pending.rects.append(rect)
            return first

    def take(self) -> Damage:
        with self._lock:
            taken, self._pending = self._pending, Damage()
        return taken


class XDamageSource:
    """X DAMAGE on the root window of ``display`` (its own connection and reader thread)."""

    def __init__(self, display: str | None = None) -> None:
        from Xlib import X
        from Xlib import error as xerror
        from Xlib.ext import damage as xdamage

        from .xdisplay import open_display

        self._xdamage: Any = xdamage
        try:
            self._dpy: Any = open_display(display)
        except (xerror.DisplayError, OSError) as exc:
            raise DamageUnavailable(f"cannot open X display {display!r}: {reason(exc)}") from exc
        try:
            if not self._dpy.has_extension(xdamage.extname):
                raise DamageUnavailable(f"display {display or '$DISPLAY'} has no DAMAGE extension")
            version = self._dpy.damage_query_version()
            root = self._dpy.screen().root
            self._root = root
            self._damage = root.damage_create(xdamage.DamageReportRawRectangles)
            self._notify_code = self._dpy.extension_event.DamageNotify
            # Root size changes (RandR) are ConfigureNotify on the root: treat them as "everything".
            root.change_attributes(event_mask=X.StructureNotifyMask)
            self._raw = RawEvents(self._dpy)  # a round trip: the requests above were accepted
        except DamageUnavailable:
            self._dpy.close()
            raise
        except Exception as exc:  # Xlib's error zoo: any failure here means no damage
            self._dpy.close()
            raise DamageUnavailable(f"DAMAGE setup failed: {reason(exc)}") from exc
        damage_id = int(getattr(self._damage, "id", self._damage))
        self._subtract = struct.pack("=BBHIII", self._dpy.display.get_extension_major(xdamage.extname),
                                     _DAMAGE_SUBTRACT, 4, damage_id, X.NONE, X.NONE)
        log.info("X DAMAGE %s.%s on %s: capture follows damage", version.major_version, version.minor_version,
                 display or "$DISPLAY")
        self._pending = DamageAccumulator()
        self._unsubtracted = 0
        self._reader = XEventThread(self._dpy, self._handle, "screen-damage", self._lost, raw=self._raw)
        self.reports = 0
        self._notify: Callable[[], None] = lambda: None
        self._job: Callable[[Damage], None] | None = None
        self._job_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        #: Jobs run in the reader thread (the session's fast path; tests count them).
        self.jobs_run = 0

    def start(self, notify: Callable[[], None]) -> None:
        self._notify = notify
        # Reports python-xlib read during the setup (the server's first report of the root, usually), handled
        # before the reader thread starts: one thread at a time handles and sends.
        fresh = bool(self._raw.early) and self._handle(self._raw.early)
        self._reader.start(self._fresh)
        if fresh:
            notify()

    def take(self) -> Damage:
        return self._pending.take()

    def arm(self, job: Callable[[Damage], None]) -> None:
        with self._job_lock:
            self._job = job

    def disarm(self) -> bool:
        with self._job_lock:
            armed, self._job = self._job is not None, None
        return armed

    def wait_idle(self, timeout: float) -> bool:
        return self._idle.wait(timeout)

    def _fresh(self) -> None:
        """In the reader thread, when damage became pending: the armed job runs here, or the session is woken."""
        with self._job_lock:
            job, self._job = self._job, None
            if job is not None:
                self._idle.clear()
        if job is None:
            self._notify()
            return
        try:
            self.jobs_run += 1
            job(self.take())  # the job reports its own failures
        finally:
            self._idle.set()

    def _handle(self, events: list[bytes]) -> bool:
        """In the reader thread, with the packets that arrived: True when new damage became pending."""
        fresh = False
        notify = self._notify_code
        for event in events:
            kind = event[0] & 0x7F
            if kind == notify:
                x, y, w, h = _AREA.unpack_from(event, 16)
                fresh |= self._pending.add(Rect(x, y, w, h))
                self.reports += 1
            elif kind == _CONFIGURE_NOTIFY:
                fresh |= self._pending.add(None)
            elif kind == 0:  # an X error: nothing this connection sends should cause one
                log.warning("screen-damage: X error %d (request %d.%d)", event[1], event[10],
                            _MINOR.unpack_from(event, 8)[0])
        # RawRectangles reports every drawing anyway, but the server still gathers them into a region; emptying
        # it every few reports keeps it small (every report cost 0.06 ms of a video frame's 0.3 here).
        self._unsubtracted += len(events)
        if self._unsubtracted >= SUBTRACT_EVERY:
            self._unsubtracted = 0
            self._raw.send(self._subtract)
        return fresh

    def _lost(self) -> None:
        """The connection died: report everything once (the next grab shows what is on screen)."""
        self._pending.add(None)

    def close(self) -> None:
        self._reader.close()  # the damage object goes with the connection


def open_damage_source(display: str | None) -> XDamageSource | None:
    """The DAMAGE source for ``display``, or None (logged: the session polls instead)."""
    try:
        return XDamageSource(display)
    except DamageUnavailable as exc:
        log.warning("screen capture falls back to polling the whole screen: %s", exc)
        return None
