"""One X connection's events, read by a thread that sleeps in ``select`` until the server writes.

Shared by the damage source, the pointer watch and the monitor-layout watch: they want "tell me
when something happened" without a timer, so an idle session costs no CPU. The handler runs in the
reader thread and returns True when the session should be woken; ``notify`` is then called (from
that thread). A dead connection calls ``on_lost`` once (and ``notify``, unless ``notify_lost`` is
False) and ends the thread. The layout watch also needs a check that no event announces: ``tick``
is called after every wake-up, events or timeout, and says when it wants to run next at the latest.

A watch that only reads events (the damage source, the pointer watch) reads them *raw*
(:class:`RawEvents`): whole packets off the socket with one ``recv``, its handler getting each
packet's bytes. python-xlib builds every event through its generic request machinery — about 120
Python calls and three reads for one 32-byte DAMAGE report, 0.3 ms: 1 % of a core for a 30 fps
video, and more for the pointer watch's XInput 2 raw motion events, which nobody read.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
from collections.abc import Callable
from typing import Any

from common.outage import reason

log = logging.getLogger(__name__)

#: A periodic check run in the reader thread: (wake the session?, seconds until the next call at the latest).
Tick = Callable[[], tuple[bool, float]]

#: X packet types whose length field (bytes 4-8, in 4-byte units) says more follows the first 32 bytes.
_REPLY, _GENERIC_EVENT = 1, 35
#: A packet announcing more than this is a broken stream, not something to wait for.
MAX_PACKET = 1 << 20
#: Bytes asked of the socket per read.
READ_SIZE = 64 * 1024


def split_packets(buffer: bytearray, byteorder: str = sys.byteorder) -> list[bytes]:
    """The whole X server packets at the front of ``buffer``, removed from it (a partial one stays).

    Events and errors are 32 bytes; replies and XGE generic events (XInput 2) announce how many 4-byte
    units follow. ValueError when one announces more than :data:`MAX_PACKET` (the stream is out of step).
    """
    packets: list[bytes] = []
    pos, end = 0, len(buffer)
    while end - pos >= 32:
        size = 32
        if buffer[pos] & 0x7F in (_REPLY, _GENERIC_EVENT):
            size += 4 * int.from_bytes(buffer[pos + 4 : pos + 8], byteorder)  # type: ignore[arg-type]
            if size > MAX_PACKET:
                raise ValueError(f"an X packet of {size} bytes: the stream is out of step")
        if end - pos < size:
            break
        packets.append(bytes(buffer[pos : pos + size]))
        pos += size
    del buffer[:pos]
    return packets


class RawEvents:
    """The event stream of a connection python-xlib set up, read from here on without it.

    Made once the setup requests are done: a round trip (``sync``) brings in every reply python-xlib
    waits for, so what follows on the socket is events (and errors). python-xlib keeps the socket and must
    not read it again; requests the watch still makes go raw, through :meth:`send` (none wait for a reply).
    ``early``: the packets of the events python-xlib had already read, for the handler like any others.
    """

    def __init__(self, dpy: Any) -> None:
        dpy.sync()
        conn = dpy.display  # python-xlib's protocol-level connection
        self._conn = conn
        self._sock = conn.socket
        self._buffer = bytearray(conn.data_recv or b"")
        conn.data_recv = b""
        self.early: list[bytes] = [bytes(event._binary) for event in conn.event_queue]  # each event keeps its 32 bytes
        conn.event_queue[:] = []
        self.byteorder = "big" if conn.big_endian else "little"

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def read(self) -> list[bytes]:
        """The packets that arrived (call when the socket is readable); ConnectionError once the server closed it."""
        data = self._sock.recv(READ_SIZE)
        if not data:
            raise ConnectionError("the X server closed the connection")
        self._buffer += data
        return split_packets(self._buffer, self.byteorder)

    def send(self, request: bytes) -> None:
        self._sock.sendall(request)

    def close(self) -> None:
        """Close the connection without python-xlib's flush, which would read (and parse) what is left on it."""
        self._conn.close_internal("client")


class XEventThread:
    """Reads ``dpy``'s events in a daemon thread; ``close`` stops it and closes ``dpy``.

    With ``tick``, ``select`` waits ``tick_s`` at first (None: until an event), then what ``tick`` last returned.
    With ``raw``, ``handle`` gets the packets' bytes (:class:`RawEvents`) instead of python-xlib's events.
    """

    def __init__(self, dpy: Any, handle: Callable[[list[Any]], bool], name: str,
                 on_lost: Callable[[], None] | None = None, *, tick: Tick | None = None,
                 tick_s: float | None = None, notify_lost: bool = True, raw: RawEvents | None = None) -> None:
        self.dpy = dpy
        self.raw = raw
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
        raw = self.raw
        fd = self.dpy.fileno() if raw is None else raw.fileno()
        try:
            while True:
                readable, _, _ = select.select([fd, self._wake_r], [], [], self._timeout)
                if self._wake_r in readable:
                    return
                if raw is not None:
                    events: list[Any] = raw.read() if fd in readable else []
                else:
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

    def close(self) -> None:
        """Stop the thread and close the connection (server resources made on it go with it)."""
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if self.raw is not None:
                self.raw.close()
            else:
                self.dpy.close()
        except Exception as exc:  # the server may be gone already
            log.info("%s: closing the X connection: %s", self._name, reason(exc))
        os.close(self._wake_r)
        os.close(self._wake_w)
