"""What both PipeWire frame readers share: a child process writing to our pipe, a reader thread, three frames.

:class:`~agent.screen.wayland.frames.PipeWireCapture` (``gst-launch-1.0``, whole frames) and
:class:`~agent.screen.wayland.native.NativeCapture` (``helpline-pwcast``, records with damage and cursor)
differ only in the child they run and in how its output becomes a frame. Everything else is here: the
buffers (allocated once on start: one lent to the pipeline, the newest, one being filled — the reader
never writes into the first two), the first-frame wait, the end of the stream with the child's own words,
the grabber side of the capture seam, and closing (the child killed by PID, the thread joined).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import IO

import numpy as np

from ..capture import Frame, Monitor
from ..damage import Damage, DamageAccumulator
from ..tiles import Rect

log = logging.getLogger(__name__)

#: How long the first grab waits for the stream's first buffer.
FIRST_FRAME_TIMEOUT_S = 10.0
#: The pipe's buffer (Linux caps it at /proc/sys/fs/pipe-max-size, 1 MiB by default).
PIPE_SIZE = 1 << 20
#: The largest monitor read (8K): a bound on the buffer the reader allocates per frame.
MAX_PIXELS = 7680 * 4320
#: Frame buffers the reader keeps: lent to the pipeline, newest, being filled.
POOL = 3


class PipeWireError(RuntimeError):
    """The stream could not be read (no reader child, no PipeWire node, the child died)."""


class ChildReader:
    """The newest frame of one PipeWire node (a monitor at ``x, y`` of size ``w × h``) read from a child process.

    Subclasses give :meth:`start` their command (through :meth:`_spawn`) and fill buffers in their thread,
    publishing each new picture with ``_latest`` under ``_lock`` and setting ``_first``.
    """

    def __init__(self, node_id: int, x: int, y: int, w: int, h: int, env: dict[str, str] | None = None,
                 pipewire_fd: int | None = None, owns_remote: bool = False) -> None:
        if not (w > 0 and h > 0 and w * h <= MAX_PIXELS):
            if owns_remote and pipewire_fd is not None:
                os.close(pipewire_fd)
            raise PipeWireError(f"stream size {w}x{h} out of range")
        self.node_id = node_id
        #: A PipeWire remote the portal opened for this session, inherited by the child; with ``owns_remote`` it
        #: is this reader's own (a portal remote serves one client) and is closed with it.
        self._pipewire_fd = pipewire_fd
        self._owns_remote = owns_remote
        self._monitor = Monitor(x, y, w, h, True)
        self._size = w * h * 4
        self._env = env
        self._pending = DamageAccumulator()
        self._lock = threading.Lock()
        self._pool: list[bytearray] = []
        self._latest: int | None = None
        self._lent: int | None = None
        self._first = threading.Event()
        self._closed = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._notify: Callable[[], None] = lambda: None
        self._reason = ""
        #: Buffers that changed the picture (each one a redraw the compositor sent).
        self.frames = 0
        #: Buffers byte for byte equal to the newest one (dropped in the reader).
        self.identical = 0

    # --- the child and its thread ---------------------------------------------------------

    def _begin(self, notify: Callable[[], None]) -> bool:
        """The common start: refused after ``close``; False when already started (the first call wins)."""
        if self._closed.is_set():  # a child started now would never be killed (and could inherit a reused fd)
            raise PipeWireError(f"the reader of PipeWire node {self.node_id} is closed")
        self._notify = notify
        if self._thread is not None:
            return False
        self._pool = [bytearray(self._size) for _ in range(POOL)]
        return True

    def _spawn(self, command: Callable[[int], Sequence[str]], what: str, run: Callable[[int], None], name: str,
               stderr: int | IO[bytes] = subprocess.PIPE) -> None:
        """Start ``command(write_fd)`` writing into a pipe of ours (the portal's remote inherited too), then
        ``run(read_fd)`` in a daemon thread."""
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError):  # 1 MiB instead of 64 KiB: a frame crosses in 8 reads, not 128
            fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        fds = (write_fd,) if self._pipewire_fd is None else (write_fd, self._pipewire_fd)
        try:
            self._proc = subprocess.Popen(command(write_fd), pass_fds=fds, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=stderr, env=self._env)
        except OSError as exc:
            os.close(read_fd)
            raise PipeWireError(f"cannot run {what}: {exc}") from exc
        finally:
            os.close(write_fd)
        self._thread = threading.Thread(target=run, args=(read_fd,), name=name, daemon=True)
        self._thread.start()

    def take(self) -> Damage:
        return self._pending.take()

    def _free(self) -> int:
        """The buffer to fill next: neither the newest nor the one lent out."""
        with self._lock:
            return next(i for i in range(POOL) if i not in (self._latest, self._lent))

    def _ended(self) -> None:
        if not self._closed.is_set():
            proc = self._proc
            detail = ""
            if proc is not None and proc.stderr is not None:
                detail = proc.stderr.read(4000).decode(errors="replace").strip()
            self._reason = f"the PipeWire stream ended{': ' + detail if detail else ''}"
            log.warning("screen capture: %s", self._reason)
        self._first.set()

    # --- ScreenGrabber ----------------------------------------------------------------------

    def monitors(self) -> list[Monitor]:
        """As mss counts: 0 = the union (the one cast monitor), 1 = that monitor."""
        mon = self._monitor
        return [Monitor(mon.x, mon.y, mon.w, mon.h), mon]

    def _wait_first(self) -> None:
        if not self._first.wait(FIRST_FRAME_TIMEOUT_S):
            raise PipeWireError(f"no frame from PipeWire node {self.node_id} within {FIRST_FRAME_TIMEOUT_S}s")

    def _newest(self, lend: bool) -> int:
        """The newest buffer's index (call under the lock); the stream's end as a PipeWireError when none."""
        latest = self._latest
        if latest is None:
            raise PipeWireError(self._reason or "the PipeWire stream ended")
        if lend:
            self._lent = latest
        return latest

    def grab_view(self, index: int) -> Frame:
        """The newest frame, lent: read-only and valid until the next ``grab_view`` (the pipeline's path)."""
        self._wait_first()
        with self._lock:
            latest = self._newest(lend=True)
        frame = np.frombuffer(self._pool[latest], dtype=np.uint8).reshape(self._monitor.h, self._monitor.w, 4)
        frame.flags.writeable = False
        return frame

    def grab(self, index: int) -> Frame:
        """The newest frame in a buffer of its own (a copy), which the caller may keep."""
        self._wait_first()
        with self._lock:
            data = bytearray(self._pool[self._newest(lend=False)])
        return np.frombuffer(data, dtype=np.uint8).reshape(self._monitor.h, self._monitor.w, 4)

    def grab_region(self, index: int, rect: Rect) -> Frame:
        """``rect`` (in the monitor's pixels) of the newest frame, copied (damage-driven capture)."""
        self._wait_first()
        w, h = self._monitor.w, self._monitor.h
        with self._lock:
            frame = np.frombuffer(self._pool[self._newest(lend=False)], dtype=np.uint8).reshape(h, w, 4)
            return frame[rect.y: rect.y + rect.h, rect.x: rect.x + rect.w].copy()

    def close(self) -> None:
        """Kill the child by PID, join the reader, close an own PipeWire remote; idempotent."""
        self._closed.set()
        try:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            if proc is not None and proc.stderr is not None:
                proc.stderr.close()
            if self._thread is not None:
                self._thread.join(timeout=5)
        finally:
            if self._owns_remote and self._pipewire_fd is not None:
                fd, self._pipewire_fd = self._pipewire_fd, None
                with contextlib.suppress(OSError):
                    os.close(fd)
