"""Frames of a PipeWire screen-cast stream, read through a ``gst-launch-1.0`` child process.

Why a child process and not PyGObject: the child needs nothing in the agent's virtualenv
(GStreamer's ``pipewiresrc`` comes with the desktop), runs its negotiation and colour
conversion off the agent's GIL, and is killed by PID with the session. The pipeline is
``pipewiresrc path=NODE ! videoconvert ! video/x-raw,format=BGRx,width=W,height=H ! fdsink``
on a pipe of our own (``-q``: nothing else is written to it); each buffer is exactly W×H×4
bytes, so frames are read back to back without any framing.

:class:`PipeWireCapture` is both halves of the capture seam for the session: a
:class:`~agent.screen.damage.DamageSource` (Mutter sends a buffer only when the monitor was
redrawn, so a new buffer *is* the damage report — reported as ``full``: the pipeline's tile
comparison finds what changed) and a :class:`~agent.screen.capture.ViewGrabber` (the newest
buffer, lent). A still desktop sends no buffers: the reader thread sleeps in ``read``.
Frames are read with ``readinto`` into three buffers allocated once (a fresh 8 MB buffer per
frame cost page faults on every frame), and a buffer equal to the newest one is dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable

import numpy as np

from ..capture import Frame, Monitor
from ..damage import Damage, DamageAccumulator

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
    """The stream could not be read (no gst-launch, no pipewiresrc, the child died)."""


def gst_command(node_id: int, w: int, h: int, fd: int, pipewire_fd: int | None = None) -> list[str]:
    """The child's command line: raw BGRx frames of node ``node_id`` written to ``fd``.

    ``pipewire_fd``: a PipeWire remote the portal opened for this session (``OpenPipeWireRemote``),
    which only shows the session's node; without it ``pipewiresrc`` connects to the user's PipeWire.
    ``always-copy=false``: fdsink writes straight from PipeWire's mapped buffer, which pipewiresrc hands
    back only after the write; with the copy the child spent ≈ 8 ms CPU per 1080p buffer, without it
    3.3 ms (benchmarks/wayland_latency.py, consecutive runs), latency unchanged within the noise.
    """
    remote = [f"fd={pipewire_fd}"] if pipewire_fd is not None else []
    return ["gst-launch-1.0", "-q", "pipewiresrc", *remote, f"path={node_id}", "always-copy=false", "!",
            "videoconvert", "!", f"video/x-raw,format=BGRx,width={w},height={h}", "!",
            "fdsink", f"fd={fd}", "sync=false"]


class PipeWireCapture:
    """The newest frame of one PipeWire node (a monitor at ``x, y`` of size ``w × h``)."""

    def __init__(self, node_id: int, x: int, y: int, w: int, h: int, env: dict[str, str] | None = None,
                 pipewire_fd: int | None = None) -> None:
        if not (w > 0 and h > 0 and w * h <= MAX_PIXELS):
            raise PipeWireError(f"stream size {w}x{h} out of range")
        self.node_id = node_id
        #: The portal's PipeWire remote, inherited by the child (the portal session owns and closes it).
        self._pipewire_fd = pipewire_fd
        self._monitor = Monitor(x, y, w, h, True)
        self._size = w * h * 4
        self._env = env
        self._pending = DamageAccumulator()
        self._lock = threading.Lock()
        #: The reader's buffers (allocated once, on start): one lent to the pipeline, one newest, one being filled.
        self._pool: list[bytearray] = []
        self._latest: int | None = None
        self._lent: int | None = None
        self._first = threading.Event()
        self._closed = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._notify: Callable[[], None] = lambda: None
        self._reason = ""
        #: Buffers received from PipeWire that differed from the one before (each one a redraw Mutter sent).
        self.frames = 0
        #: Buffers received byte for byte equal to the newest one (dropped in the reader).
        self.identical = 0

    # --- DamageSource ---------------------------------------------------------------------

    def start(self, notify: Callable[[], None]) -> None:
        """Start the child and the reader thread (idempotent: the first call wins); refused after ``close``."""
        if self._closed.is_set():  # a child started now would never be killed (and could inherit a reused fd)
            raise PipeWireError(f"the reader of PipeWire node {self.node_id} is closed")
        self._notify = notify
        if self._thread is not None:
            return
        self._pool = [bytearray(self._size) for _ in range(POOL)]
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError):  # 1 MiB instead of 64 KiB: a frame crosses in 8 reads, not 128
            fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        try:
            self._proc = subprocess.Popen(
                gst_command(self.node_id, self._monitor.w, self._monitor.h, write_fd, self._pipewire_fd),
                pass_fds=(write_fd,) if self._pipewire_fd is None else (write_fd, self._pipewire_fd),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self._env,
            )
        except OSError as exc:
            os.close(read_fd)
            raise PipeWireError(f"cannot run gst-launch-1.0: {exc}") from exc
        finally:
            os.close(write_fd)
        log.info("PipeWire node %d read by gst-launch-1.0 (pid %d), %dx%d BGRx", self.node_id, self._proc.pid,
                 self._monitor.w, self._monitor.h)
        self._thread = threading.Thread(target=self._read, args=(read_fd,), name="screen-pipewire", daemon=True)
        self._thread.start()

    def take(self) -> Damage:
        return self._pending.take()

    def _read(self, fd: int) -> None:
        """Read frames back to back into the pool's free buffer (``readinto``: no allocation, no copy)."""
        with open(fd, "rb", buffering=0) as pipe:
            while not self._closed.is_set():
                with self._lock:
                    index = next(i for i in range(POOL) if i not in (self._latest, self._lent))
                buf = self._pool[index]
                view, got = memoryview(buf), 0
                while got < self._size:
                    n = pipe.readinto(view[got:])
                    if not n:
                        self._ended()
                        return
                    got += n
                latest = self._latest
                # bytearray == bytearray is one memcmp (≈ 1 ms for 8 MB): a buffer Mutter sent again
                # unchanged wakes nothing, where the pipeline's tile comparison would cost several.
                if latest is not None and buf == self._pool[latest]:
                    self.identical += 1
                    continue
                with self._lock:
                    self._latest = index
                    self.frames += 1
                self._first.set()
                if self._pending.add(None):
                    self._notify()

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

    def grab_view(self, index: int) -> Frame:
        """The newest frame, lent: read-only and valid until the next ``grab_view`` (the pipeline's path).

        The reader never writes into the buffer lent out or the newest one; with three buffers
        it always has a third to fill.
        """
        self._wait_first()
        with self._lock:
            latest = self._latest
            if latest is None:
                raise PipeWireError(self._reason or "the PipeWire stream ended")
            self._lent = latest
        frame = np.frombuffer(self._pool[latest], dtype=np.uint8).reshape(self._monitor.h, self._monitor.w, 4)
        frame.flags.writeable = False
        return frame

    def grab(self, index: int) -> Frame:
        """The newest frame in a buffer of its own (a copy), which the caller may keep."""
        self._wait_first()
        with self._lock:
            latest = self._latest
            if latest is None:
                raise PipeWireError(self._reason or "the PipeWire stream ended")
            data = bytearray(self._pool[latest])
        return np.frombuffer(data, dtype=np.uint8).reshape(self._monitor.h, self._monitor.w, 4)

    def _wait_first(self) -> None:
        if not self._first.wait(FIRST_FRAME_TIMEOUT_S):
            raise PipeWireError(f"no frame from PipeWire node {self.node_id} within {FIRST_FRAME_TIMEOUT_S}s")

    def close(self) -> None:
        """Kill the child by PID and join the reader; idempotent."""
        self._closed.set()
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
