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
frame cost page faults on every frame), and a buffer equal to the newest one is dropped. The buffers,
the child's lifetime and the grabber side are :class:`~agent.screen.wayland.child_reader.ChildReader`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .child_reader import FIRST_FRAME_TIMEOUT_S, MAX_PIXELS, PIPE_SIZE, POOL, ChildReader, PipeWireError

log = logging.getLogger(__name__)

__all__ = ["FIRST_FRAME_TIMEOUT_S", "MAX_PIXELS", "PIPE_SIZE", "POOL", "PipeWireCapture", "PipeWireError",
           "gst_command"]


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


class PipeWireCapture(ChildReader):
    """The newest frame of one PipeWire node (a monitor at ``x, y`` of size ``w × h``), read by gst-launch-1.0."""

    # --- DamageSource ---------------------------------------------------------------------

    def start(self, notify: Callable[[], None]) -> None:
        """Start the child and the reader thread (idempotent: the first call wins); refused after ``close``."""
        if not self._begin(notify):
            return
        mon = self._monitor
        self._spawn(lambda fd: gst_command(self.node_id, mon.w, mon.h, fd, self._pipewire_fd), "gst-launch-1.0",
                    self._read, "screen-pipewire")
        assert self._proc is not None
        log.info("PipeWire node %d read by gst-launch-1.0 (pid %d), %dx%d BGRx", self.node_id, self._proc.pid,
                 mon.w, mon.h)

    def _read(self, fd: int) -> None:
        """Read frames back to back into the pool's free buffer (``readinto``: no allocation, no copy)."""
        with open(fd, "rb", buffering=0) as pipe:
            while not self._closed.is_set():
                buf = self._pool[index := self._free()]
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
