"""The records ``helpline-pwcast`` writes to its pipe, parsed and checked (no I/O here).

The native reader (agent/screen/wayland/native/helpline-pwcast.c) writes one record per PipeWire buffer
that brought something new: a 64-byte header, the damage rectangles, a new cursor image, then pixels —
the whole frame or only the rectangles' pixels. The child is ours, but what it writes comes from the
compositor's buffers, so every number is checked before anything is allocated or read: a malformed record
is a :class:`NativeStreamError` (the reader logs it and ends the stream), never a crash or an unbounded read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..tiles import Rect

MAGIC = 0x43575048  # b"HPWC" read as a little-endian u32
VERSION = 1
#: magic, version, flags, sequence, width, height, rect count, cursor x, y, hotspot x, y, shape w, h, 16 bytes zero.
HEADER = struct.Struct("<IHHIIIIiiiiII16x")
RECT = struct.Struct("<IIII")
#: The whole frame's pixels follow.
FLAG_FULL = 1
#: Only the damage rectangles' pixels follow (rect after rect, row by row).
FLAG_RECTS = 2
#: The rectangles say what changed (else: everything may have).
FLAG_DAMAGE = 4
#: Cursor metadata present: the pointer is on this stream at (cursor x, cursor y).
FLAG_CURSOR = 8
#: A new cursor image follows (shape w × h RGBA; 0 × 0: no image, the pointer is not drawn).
FLAG_SHAPE = 16
#: Cursor metadata present, the pointer is not on this stream.
FLAG_HIDDEN = 32
#: The rectangles come from the child's comparison with the last frame, not from the compositor's metadata.
FLAG_COMPUTED = 64
KNOWN_FLAGS = 127
#: Bounds the child keeps (helpline-pwcast.c: MAX_RECTS, MAX_CURSOR); anything above is malformed.
MAX_RECTS = 64
MAX_SHAPE_SIDE = 512
#: Pointer coordinates beyond this (either way) are malformed.
MAX_COORD = 1 << 20


class NativeStreamError(Exception):
    """The native reader's output is malformed (the stream is ended with this message)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record's header, checked against the frame size the reader expects."""

    flags: int
    sequence: int
    width: int
    height: int
    n_rects: int
    cursor_x: int
    cursor_y: int
    hot_x: int
    hot_y: int
    shape_w: int
    shape_h: int

    @property
    def rects_size(self) -> int:
        return self.n_rects * RECT.size

    @property
    def shape_size(self) -> int:
        return self.shape_w * self.shape_h * 4 if self.flags & FLAG_SHAPE else 0

    def pixels_size(self, rects: list[Rect]) -> int:
        """Bytes of pixels after the shape: the frame, the rectangles' pixels, or none."""
        if self.flags & FLAG_FULL:
            return self.width * self.height * 4
        if self.flags & FLAG_RECTS:
            return sum(r.w * r.h for r in rects) * 4
        return 0


def parse_header(data: bytes | bytearray | memoryview, width: int, height: int) -> Record:
    """The header in ``data`` (exactly :data:`HEADER` ``.size`` bytes) of a stream of ``width`` × ``height``."""
    if len(data) != HEADER.size:
        raise NativeStreamError(f"a record header is {HEADER.size} bytes, got {len(data)}")
    (magic, version, flags, sequence, w, h, n_rects, cx, cy, hx, hy, sw, sh) = HEADER.unpack(data)
    if magic != MAGIC:
        raise NativeStreamError(f"bad magic {magic:#010x} (expected {MAGIC:#010x}): the stream is out of step")
    if version != VERSION:
        raise NativeStreamError(f"record version {version}, this agent reads version {VERSION}")
    if flags & ~KNOWN_FLAGS:
        raise NativeStreamError(f"unknown flags {flags:#x}")
    if (w, h) != (width, height):
        raise NativeStreamError(f"a {w}x{h} frame in a {width}x{height} stream")
    if flags & FLAG_FULL and flags & FLAG_RECTS:
        raise NativeStreamError("a record cannot carry both the whole frame and rectangles")
    if n_rects > MAX_RECTS:
        raise NativeStreamError(f"{n_rects} damage rectangles (at most {MAX_RECTS})")
    if n_rects and not flags & FLAG_DAMAGE:
        raise NativeStreamError("rectangles without the damage flag")
    if flags & FLAG_RECTS and not n_rects:
        raise NativeStreamError("rectangle pixels without rectangles")
    if flags & FLAG_CURSOR and flags & FLAG_HIDDEN:
        raise NativeStreamError("a pointer both on and off the stream")
    if not all(-MAX_COORD <= v <= MAX_COORD for v in (cx, cy, hx, hy)):
        raise NativeStreamError(f"cursor numbers out of range ({cx}, {cy}, hotspot {hx}, {hy})")
    if flags & FLAG_SHAPE:
        if sw > MAX_SHAPE_SIDE or sh > MAX_SHAPE_SIDE or (sw == 0) != (sh == 0):
            raise NativeStreamError(f"cursor image {sw}x{sh} (at most {MAX_SHAPE_SIDE} a side)")
    elif sw or sh:
        raise NativeStreamError("a cursor image size without the shape flag")
    return Record(flags, sequence, w, h, n_rects, cx, cy, hx, hy, sw, sh)


def parse_rects(data: bytes | bytearray | memoryview, record: Record) -> list[Rect]:
    """The record's rectangles; each must be non-empty and inside the frame, and their pixels fit one frame."""
    if len(data) != record.rects_size:
        raise NativeStreamError(f"{record.n_rects} rectangles are {record.rects_size} bytes, got {len(data)}")
    rects: list[Rect] = []
    area = 0
    for x, y, w, h in RECT.iter_unpack(data):
        if not (w > 0 and h > 0 and x + w <= record.width and y + h <= record.height):
            raise NativeStreamError(f"damage rectangle {w}x{h} at {x},{y} outside the "
                                    f"{record.width}x{record.height} frame")
        area += w * h
        rects.append(Rect(x, y, w, h))
    if record.flags & FLAG_RECTS and area > record.width * record.height:
        raise NativeStreamError(f"rectangles of {area} pixels in a frame of {record.width * record.height}")
    return rects
