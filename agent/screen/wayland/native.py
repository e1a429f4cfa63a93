"""Frames of a PipeWire screen-cast stream read by ``helpline-pwcast``, our own small libpipewire client.

Why not only ``gst-launch-1.0 pipewiresrc`` (frames.py): pipewiresrc drops the buffers' metadata, so
every buffer had to be reported to the pipeline as ``full`` damage and the pointer had to be painted
into the frames. The native child (native/helpline-pwcast.c, built by scripts/setup.sh) keeps both:

* **Damage.** Where the compositor sends ``SPA_META_VideoDamage`` the child passes its rectangles on;
  Mutter 43.8 sends none (tried: asked for, never negotiated), so the child compares each buffer with
  the last one in 64-pixel tiles and writes only the changed tiles' pixels (``--pixels damage``), or
  nothing when Mutter sent the same picture again. This reader pastes them into its frame and reports
  them as damage rectangles, so the pipeline compares and encodes only those tiles.
* **Cursor.** Streams are recorded in cursor-mode metadata (the pointer is not painted into frames:
  moving it changes no tile); position and image go to the session through a
  :class:`~agent.screen.wayland.stream_cursor.StreamCursor`, as XFixes does on X11.

The records are parsed and checked by native_stream.py; a malformed one ends the stream with the
reason logged. :func:`native_reader` decides at run time whether the child is there and runs.

Buffers: three frames allocated once, as in frames.py (one lent to the pipeline, the newest, one being
filled). A frame being filled with rectangles is first brought up to the newest one: each buffer keeps
the rectangles written since it was last filled (``_behind``) and copies just those from the newest.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import FileIO
from typing import BinaryIO, Literal

import numpy as np

from ..tiles import Rect
from .child_reader import POOL, ChildReader
from .native_stream import (
    FLAG_CURSOR,
    FLAG_DAMAGE,
    FLAG_FULL,
    FLAG_HIDDEN,
    FLAG_RECTS,
    FLAG_SHAPE,
    HEADER,
    NativeStreamError,
    parse_header,
    parse_rects,
)
from .stream_cursor import StreamCursor

log = logging.getLogger(__name__)

BINARY = "helpline-pwcast"
#: The child's one-line answer to ``--version`` (its record version).
VERSION_LINE = "helpline-pwcast 1"
#: ``HELPLINE_PWCAST``: a path to the binary, or one of these to use the gst-launch reader.
DISABLED = ("off", "0", "no", "gst", "gst-launch")
#: More rectangles written into the frames since a buffer was last filled than this: it is copied whole.
MAX_BEHIND = 64
Pixels = Literal["full", "damage"]


@dataclass(frozen=True, slots=True)
class NativeChoice:
    """The native reader's binary, or None, and why (logged once per session)."""

    binary: str | None
    reason: str
    #: ``HELPLINE_PWCAST_PIXELS=full`` makes the child write whole frames (for measurements); default damage.
    pixels: Pixels = "damage"
    #: Streams recorded with cursor metadata (the pointer out of the frames); backend.py sets it from
    #: ``HELPLINE_WAYLAND_CURSOR`` / ``[screen] wayland_cursor`` ("embedded": the pointer drawn in).
    cursor_metadata: bool = True


@functools.lru_cache(maxsize=8)
def _runs(path: str) -> str:
    """"" when ``path --version`` answers as expected, else what went wrong (cached: asked once per path)."""
    try:
        done = subprocess.run([path, "--version"], capture_output=True, timeout=10, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run {path}: {exc}"
    answer = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0 or answer != VERSION_LINE:
        detail = done.stderr.decode(errors="replace").strip()[:300]
        return f"{path} --version answered {answer!r} (exit {done.returncode}){': ' + detail if detail else ''}"
    return ""


def native_reader(env: Mapping[str, str] | None = None) -> NativeChoice:
    """The native reader's binary when it is present and runs: ``HELPLINE_PWCAST`` (a path, or "off"), else
    ``helpline-pwcast`` beside the agent's Python (the virtualenv's bin, where scripts/setup.sh builds it), else
    on PATH."""
    env = os.environ if env is None else env
    forced = env.get("HELPLINE_PWCAST", "").strip()
    if forced.lower() in DISABLED:
        return NativeChoice(None, f"HELPLINE_PWCAST={forced} asks for the gst-launch reader")
    beside = os.path.join(os.path.dirname(sys.executable), BINARY)
    path = forced or (beside if os.access(beside, os.X_OK) else shutil.which(BINARY))
    if not path:
        return NativeChoice(None, f"{BINARY} is not installed (scripts/setup.sh builds it; it needs libpipewire-0.3)")
    problem = _runs(path)
    if problem:
        return NativeChoice(None, problem)
    pixels: Pixels = "full" if env.get("HELPLINE_PWCAST_PIXELS", "").strip().lower() == "full" else "damage"
    return NativeChoice(path, f"{path} runs", pixels)


def native_command(binary: str, node_id: int, w: int, h: int, fd: int, pipewire_fd: int | None = None,
                   pixels: Pixels = "damage") -> list[str]:
    """The child's command line: records of node ``node_id`` (``w`` × ``h``) written to ``fd``."""
    remote = ["--remote", str(pipewire_fd)] if pipewire_fd is not None else []
    return [binary, "--node", str(node_id), "--out", str(fd), *remote, "--width", str(w), "--height", str(h),
            "--pixels", pixels]


def _read_exact(pipe: FileIO, into: memoryview) -> bool:
    """Fill ``into`` from the pipe; False at the end of the stream."""
    got = 0
    while got < len(into):
        n = pipe.readinto(into[got:])
        if not n:
            return False
        got += n
    return True


class NativeCapture(ChildReader):
    """The newest frame of one PipeWire node (a monitor at ``x, y`` of size ``w × h``), with its damage and cursor.

    ``owns_remote``: ``pipewire_fd`` is this reader's own and is closed with it (a portal remote per reader).
    """

    def __init__(self, node_id: int, x: int, y: int, w: int, h: int, *, binary: str,
                 cursor: StreamCursor | None = None, env: dict[str, str] | None = None,
                 pipewire_fd: int | None = None, owns_remote: bool = False, pixels: Pixels = "damage") -> None:
        super().__init__(node_id, x, y, w, h, env, pipewire_fd, owns_remote)
        self._binary = binary
        self._cursor = cursor
        self._pixels: Pixels = pixels
        #: Per buffer: rectangles written into other buffers since it was filled (None: it is behind everywhere).
        self._behind: list[list[Rect] | None] = []
        #: Of the buffers that changed the picture (``frames``), those that came as rectangles ...
        self.damage_frames = 0
        #: Of those, the whole frames that came with damage rectangles (most of the picture changed).
        self.whole_damage_frames = 0
        #: Records read (pixels, cursor, or both).
        self.records = 0

    # --- DamageSource ---------------------------------------------------------------------

    def start(self, notify: Callable[[], None]) -> None:
        """Start the child and the reader thread (idempotent: the first call wins); refused after ``close``."""
        if not self._begin(notify):
            return
        self._behind = [None] * POOL
        mon = self._monitor
        trace = (self._env or os.environ).get("HELPLINE_PWCAST_TRACE", "")

        def command(fd: int) -> list[str]:
            line = native_command(self._binary, self.node_id, mon.w, mon.h, fd, self._pipewire_fd, self._pixels)
            return [*line, "--verbose"] if trace else line

        # HELPLINE_PWCAST_TRACE=FILE: the child's per-buffer account (--verbose) appended there, for diagnosis.
        errors: int | BinaryIO = open(trace, "ab") if trace else subprocess.PIPE  # noqa: SIM115 - closed below
        try:
            self._spawn(command, self._binary, self._run, "screen-pwcast", stderr=errors)
        finally:
            if not isinstance(errors, int):
                errors.close()
        assert self._proc is not None
        log.info("PipeWire node %d read by %s (pid %d), %dx%d, pixels: %s", self.node_id, BINARY, self._proc.pid,
                 mon.w, mon.h, self._pixels)

    def _run(self, fd: int) -> None:
        with FileIO(fd, "rb") as pipe:
            try:
                self._read(pipe)
            except NativeStreamError as exc:
                self._fail(f"the native PipeWire reader's output is malformed: {exc}")
            except Exception as exc:  # a bug here must end the stream with a reason, not kill the thread silently
                log.exception("screen capture: reading PipeWire node %d failed", self.node_id)
                self._fail(f"reading the stream failed: {exc!r}")

    def _read(self, pipe: FileIO) -> None:
        mon = self._monitor
        header = bytearray(HEADER.size)
        scratch = bytearray()
        while not self._closed.is_set():
            if not _read_exact(pipe, memoryview(header)):
                self._ended()
                return
            record = parse_header(header, mon.w, mon.h)
            rects: list[Rect] = []
            if record.n_rects:
                raw = bytearray(record.rects_size)
                if not _read_exact(pipe, memoryview(raw)):
                    self._ended()
                    return
                rects = parse_rects(raw, record)
            shape: bytes | None = None
            if record.flags & FLAG_SHAPE:
                image = bytearray(record.shape_size)
                if image and not _read_exact(pipe, memoryview(image)):
                    self._ended()
                    return
                shape = bytes(image)
            self.records += 1
            if record.flags & FLAG_FULL:
                if not self._read_full(pipe, rects if record.flags & FLAG_DAMAGE else None):
                    return
            elif record.flags & FLAG_RECTS:
                if self._latest is None:
                    raise NativeStreamError("rectangles before the first whole frame")
                size = record.pixels_size(rects)
                if len(scratch) < size:
                    scratch = bytearray(self._size)  # at most one frame (parse_rects checked the area)
                if not _read_exact(pipe, memoryview(scratch)[:size]):
                    self._ended()
                    return
                self._paste(rects, scratch)
            if self._cursor is not None and record.flags & (FLAG_CURSOR | FLAG_HIDDEN | FLAG_SHAPE):
                self._report_cursor(record.flags, record.cursor_x, record.cursor_y,
                                    None if shape is None else (shape, record.shape_w, record.shape_h,
                                                                record.hot_x, record.hot_y))

    def _read_full(self, pipe: FileIO, damage: list[Rect] | None) -> bool:
        """A whole frame into the free buffer; reported as ``damage`` (None: everything). False at the end."""
        index = self._free()
        buf = self._pool[index]
        if not _read_exact(pipe, memoryview(buf)):
            self._ended()
            return False
        latest = self._latest
        # --pixels full: the same picture again (in damage mode the child wrote nothing for it, and a whole frame
        # comes with most of it changed: an 8 MB comparison for nothing)
        if self._pixels == "full" and latest is not None and buf == self._pool[latest]:
            self.identical += 1
            return True
        self.whole_damage_frames += damage is not None
        self._publish(index, damage, None)
        return True

    def _paste(self, rects: list[Rect], pixels: bytearray) -> None:
        """The newest frame with ``rects`` replaced by ``pixels`` (rect after rect), into the free buffer."""
        index = self._free()
        latest = self._latest
        assert latest is not None
        w, h = self._monitor.w, self._monitor.h
        frame = np.frombuffer(self._pool[index], dtype=np.uint8).reshape(h, w, 4)
        newest = np.frombuffer(self._pool[latest], dtype=np.uint8).reshape(h, w, 4)
        behind = self._behind[index]
        if behind is None:
            np.copyto(frame, newest)
        else:
            for r in behind:
                frame[r.y: r.y + r.h, r.x: r.x + r.w] = newest[r.y: r.y + r.h, r.x: r.x + r.w]
        offset = 0
        for r in rects:
            size = r.w * r.h * 4
            frame[r.y: r.y + r.h, r.x: r.x + r.w] = np.frombuffer(pixels, dtype=np.uint8, count=size,
                                                                  offset=offset).reshape(r.h, r.w, 4)
            offset += size
        self.damage_frames += 1
        self._publish(index, rects, rects)

    def _publish(self, index: int, damage: list[Rect] | None, written: list[Rect] | None) -> None:
        """Make buffer ``index`` the newest; the others are now behind by ``written`` (None: everywhere)."""
        for i in range(POOL):
            if i == index:
                self._behind[i] = []
                continue
            behind = self._behind[i]
            if written is None or behind is None or len(behind) + len(written) > MAX_BEHIND:
                self._behind[i] = None
            else:
                behind.extend(written)
        with self._lock:
            self._latest = index
            self.frames += 1
        self._first.set()
        mon = self._monitor
        fresh = False
        if damage is None:
            fresh = self._pending.add(None)
        else:
            for r in damage:  # the pipeline takes damage in desktop coordinates
                fresh |= self._pending.add(Rect(mon.x + r.x, mon.y + r.y, r.w, r.h))
        if fresh:
            self._notify()

    def _report_cursor(self, flags: int, x: int, y: int, shape: tuple[bytes, int, int, int, int] | None) -> None:
        assert self._cursor is not None
        mon = self._monitor
        if flags & FLAG_CURSOR:
            self._cursor.update(self, (mon.x + x, mon.y + y), shape)
        elif flags & FLAG_HIDDEN:
            self._cursor.update(self, (mon.x - 1, mon.y - 1), shape, on_stream=False)
        else:
            self._cursor.update(self, None, shape)

    def _fail(self, reason: str) -> None:
        if not self._closed.is_set():
            self._reason = reason
            log.error("screen capture: %s; the stream of PipeWire node %d is ended", reason, self.node_id)
        self._first.set()
