"""Session-tunnel wire format: binary screen updates and JSON text messages.

Theory of operation
-------------------
A session tunnel is a websocket. The agent sends **binary** messages, each one
rectangle of the screen (or a cursor shape), with a fixed 21-byte big-endian header::

    magic/version  u8   0xA1 (high nibble 0xA = Helpline stream, low nibble = version 1)
    kind           u8   Kind: UPDATE (lossy or lossless change), REFRESH (lossless
                        refinement of a region sent lossy before), CURSOR_SHAPE
    flags          u8   Flags: END_OF_FRAME marks the last rectangle of one update
    monitor        u8   index of the monitor the rectangle belongs to
    x, y, w, h     u16  rectangle in that monitor's pixel space (x+w, y+h <= 65535)
    encoding       u8   Encoding: RAW (BGRA), JPEG, PNG, ZLIB (zlib of BGR24 rows),
                        RGBA (cursor shapes only), FILL (3 bytes B, G, R: the whole
                        rectangle is that colour; a typed caret or a toggled box in 24 bytes),
                        JPEG_LEAN (the libjpeg quality, then a JPEG without its JFIF marker,
                        quantisation and Huffman tables: the viewer rebuilds them,
                        :mod:`protocol.jpeg_tables`; only from agents offered it)
    sequence       u32  update number; every rectangle of one update shares it
    length         u32  payload length, must equal the bytes that follow

A **cursor shape** (``kind = CURSOR_SHAPE``) reuses the header: ``w``/``h`` are the
image size (at most :data:`MAX_CURSOR_SIDE`), ``x``/``y`` the hotspot inside it,
``encoding`` is always RGBA (straight alpha, rows top-down, ``w*h*4`` bytes), ``flags``
is NONE and ``sequence`` counts shapes (it is not an update: the viewer never acks it).
The agent sends one whenever the pointer image changes, before the next ``cursor``
position message; the viewer draws the newest shape at each position.

Every rectangle of one update carries the same sequence number; the viewer acks the
sequence (``{"type": "ack", "seq": N}``) once it has drawn the rectangle flagged
``END_OF_FRAME``. The agent keeps at most a few updates un-acked (flow control).

**Batched updates.** Where the session offer says ``batched`` (every viewer of the session
reads it: :data:`BATCH_CAPABILITY`), one binary message carries several records of one update
back to back — each the header above and its payload — instead of one websocket message per
rectangle (:func:`batch_records`, :func:`unpack_records`). A message holds records of one update
only (one sequence; UPDATE and REFRESH kinds), END_OF_FRAME only on its last record, and at most
:data:`MAX_BATCH_BYTES` unless it is one record alone; cursor shapes always travel alone. A
message of one record is exactly the unbatched format, so a viewer that reads batches reads
everything. The relay, which never decodes pictures, reads what it needs from the headers alone
(:func:`scan_records`).

**Text** messages are JSON objects with a ``type`` tag (see the Struct classes below);
input travels viewer → agent, cursor/monitors/error/stats agent → viewer.

Rules for this file: no sockets, no asyncio, no clocks. Decoding peer input never
raises anything but :class:`StreamProtocolError`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from .errors import RemoteProtocolError

MAGIC_VERSION = 0xA1
HEADER = struct.Struct(">BBBBHHHHBII")
HEADER_SIZE = HEADER.size
#: Where a record's payload length sits in its header.
_LENGTH, _LENGTH_AT = struct.Struct(">I"), HEADER_SIZE - 4

#: Largest payload of one binary update (a 4K BGRA rectangle stays well below).
MAX_PAYLOAD = 8 * 1024 * 1024
#: Largest rectangle side.
MAX_SIDE = 8192
#: Largest cursor shape side (64 KiB of RGBA at most).
MAX_CURSOR_SIDE = 128
#: Largest coordinate (x+w, y+h) in a monitor's pixel space.
MAX_COORD = 65535
#: A batched message holds records up to this many bytes (a larger record travels alone).
MAX_BATCH_BYTES = 1024 * 1024
#: Records in one batched message, at most (a screen of 64-pixel tiles at 4K is 2,040 tiles).
MAX_BATCH_RECORDS = 4096
#: An agent's hello capability: it reads ``session.offer.batched`` and can send batched updates.
BATCH_CAPABILITY = "stream.batched"
#: Largest text message on the tunnel.
MAX_TEXT_BYTES = 64 * 1024
#: Monitors listed in one ``monitors`` message.
MAX_MONITORS = 16
#: Characters in one ``input.text``.
MAX_INPUT_TEXT = 256
MAX_SEQ = 2**32 - 1


class StreamProtocolError(RemoteProtocolError):
    """Anything wrong with a tunnel message (binary or text). The only error decoders raise."""

    code = "stream_invalid"


class Kind(enum.IntEnum):
    UPDATE = 1
    REFRESH = 2
    CURSOR_SHAPE = 3


class Encoding(enum.IntEnum):
    RAW = 0  # BGRA, 4 bytes per pixel, rows top-down
    JPEG = 1
    PNG = 2
    ZLIB = 3  # zlib-compressed BGR24 rows
    RGBA = 4  # straight-alpha RGBA, 4 bytes per pixel, rows top-down (cursor shapes only)
    FILL = 5  # one B, G, R pixel: the whole rectangle is that colour
    JPEG_LEAN = 6  # quality byte + a JPEG without its standard tables (protocol.jpeg_tables rebuilds them)


class Flags(enum.IntFlag):
    NONE = 0
    END_OF_FRAME = 1


#: Header values to their members: a dict lookup, where calling the enum costs a microsecond a field.
_KINDS: dict[int, Kind] = {int(k): k for k in Kind}
_ENCODINGS: dict[int, Encoding] = {int(e): e for e in Encoding}
_FLAG_VALUES: dict[int, Flags] = {0: Flags.NONE, int(Flags.END_OF_FRAME): Flags.END_OF_FRAME}


@dataclass(frozen=True, slots=True)
class Update:
    """One decoded binary message: a rectangle and its encoded pixels."""

    kind: Kind
    monitor: int
    x: int
    y: int
    w: int
    h: int
    encoding: Encoding
    seq: int
    payload: bytes
    flags: Flags = Flags.NONE

    @property
    def end_of_frame(self) -> bool:
        return bool(self.flags & Flags.END_OF_FRAME)


def _check_update_fields(
    kind: int, monitor: int, x: int, y: int, w: int, h: int, encoding: int, seq: int, flags: int, length: int
) -> tuple[Kind, Encoding, Flags]:
    kind_v, encoding_v, flags_v = _KINDS.get(kind), _ENCODINGS.get(encoding), _FLAG_VALUES.get(flags)
    if kind_v is None or encoding_v is None:
        raise StreamProtocolError(f"unknown kind {kind} or encoding {encoding}")
    if flags_v is None:
        raise StreamProtocolError(f"unknown flags {flags:#x}")
    if not 0 <= monitor <= 255:
        raise StreamProtocolError(f"monitor {monitor} out of range")
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise StreamProtocolError(f"rectangle {w}x{h} outside 1..{MAX_SIDE}")
    if x < 0 or y < 0 or x + w > MAX_COORD or y + h > MAX_COORD:
        raise StreamProtocolError(f"rectangle at {x},{y} size {w}x{h} exceeds {MAX_COORD}")
    if not 0 <= seq <= MAX_SEQ:
        raise StreamProtocolError(f"sequence {seq} out of range")
    if length > MAX_PAYLOAD:
        raise StreamProtocolError(f"payload of {length} bytes exceeds {MAX_PAYLOAD}")
    if encoding_v in (Encoding.RAW, Encoding.RGBA) and length != w * h * 4:
        raise StreamProtocolError(f"raw payload of {length} bytes for {w}x{h}")
    if encoding_v is Encoding.FILL and length != 3:
        raise StreamProtocolError(f"fill payload of {length} bytes (3 expected)")
    if (kind_v is Kind.CURSOR_SHAPE) != (encoding_v is Encoding.RGBA):
        raise StreamProtocolError("cursor shapes are RGBA and RGBA is for cursor shapes only")
    if kind_v is Kind.CURSOR_SHAPE:
        if w > MAX_CURSOR_SIDE or h > MAX_CURSOR_SIDE:
            raise StreamProtocolError(f"cursor shape {w}x{h} exceeds {MAX_CURSOR_SIDE}x{MAX_CURSOR_SIDE}")
        if x >= w or y >= h:
            raise StreamProtocolError(f"cursor hotspot {x},{y} outside the {w}x{h} shape")
        if flags:
            raise StreamProtocolError("cursor shapes carry no flags")
    return kind_v, encoding_v, flags_v


def pack_update(
    *,
    kind: Kind,
    monitor: int,
    x: int,
    y: int,
    w: int,
    h: int,
    encoding: Encoding,
    seq: int,
    payload: bytes,
    flags: Flags = Flags.NONE,
) -> bytes:
    """Header + payload of one binary message; refuses what the peer would refuse."""
    _check_update_fields(int(kind), monitor, x, y, w, h, int(encoding), seq, int(flags), len(payload))
    header = HEADER.pack(MAGIC_VERSION, kind, flags, monitor, x, y, w, h, encoding, seq, len(payload))
    return header + payload


def pack_cursor_shape(*, w: int, h: int, hot_x: int, hot_y: int, rgba: bytes, seq: int, monitor: int = 0) -> bytes:
    """A CURSOR_SHAPE message: ``w``x``h`` straight-alpha RGBA with the hotspot at (hot_x, hot_y)."""
    return pack_update(
        kind=Kind.CURSOR_SHAPE, monitor=monitor, x=hot_x, y=hot_y, w=w, h=h, encoding=Encoding.RGBA, seq=seq,
        payload=rgba,
    )


def unpack_update(data: bytes | bytearray | memoryview) -> Update:
    """Parse one binary message from the peer."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StreamProtocolError(f"binary message expected, got {type(data).__name__}")
    if len(data) < HEADER_SIZE:
        raise StreamProtocolError(f"binary message of {len(data)} bytes is shorter than the header")
    magic, kind, flags, monitor, x, y, w, h, encoding, seq, length = HEADER.unpack_from(data)
    if magic != MAGIC_VERSION:
        raise StreamProtocolError(f"bad magic/version byte {magic:#x}")
    kind_v, encoding_v, flags_v = _check_update_fields(kind, monitor, x, y, w, h, encoding, seq, flags, length)
    if len(data) - HEADER_SIZE != length:
        raise StreamProtocolError(f"payload length {length} but {len(data) - HEADER_SIZE} bytes follow")
    return Update(kind_v, monitor, x, y, w, h, encoding_v, seq, bytes(data[HEADER_SIZE:]), flags_v)


def batch_records(records: Sequence[bytes], max_bytes: int = MAX_BATCH_BYTES,
                  max_records: int = MAX_BATCH_RECORDS) -> list[bytes]:
    """One update's packed records as few binary messages as fit ``max_bytes`` and ``max_records`` each, in order."""
    messages: list[bytes] = []
    start, size = 0, 0
    for i, record in enumerate(records):
        if i > start and (size + len(record) > max_bytes or i - start == max_records):
            messages.append(records[start] if i - start == 1 else b"".join(records[start:i]))
            start, size = i, 0
        size += len(record)
    if start < len(records):
        messages.append(records[start] if len(records) - start == 1 else b"".join(records[start:]))
    return messages


def unpack_records(data: bytes) -> list[Update]:
    """Parse one binary message from the peer: one record, or a batch of one update's records."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StreamProtocolError(f"binary message expected, got {type(data).__name__}")
    view = memoryview(data)
    total = len(view)
    if total < HEADER_SIZE:
        raise StreamProtocolError(f"binary message of {total} bytes is shorter than the header")
    (first_length,) = _LENGTH.unpack_from(view, _LENGTH_AT)
    if HEADER_SIZE + first_length == total:
        return [unpack_update(data)]  # the common case, and the only one for cursor shapes
    if total > MAX_BATCH_BYTES:
        raise StreamProtocolError(f"a batch of {total} bytes exceeds {MAX_BATCH_BYTES}")
    records: list[Update] = []
    at = 0
    while at < total:
        if len(records) == MAX_BATCH_RECORDS:
            raise StreamProtocolError(f"more than {MAX_BATCH_RECORDS} records in one message")
        if total - at < HEADER_SIZE:
            raise StreamProtocolError(f"{total - at} bytes after record {len(records)} are not a record")
        (length,) = _LENGTH.unpack_from(view, at + _LENGTH_AT)
        end = at + HEADER_SIZE + length
        if end > total:
            raise StreamProtocolError(f"record {len(records)} claims {length} bytes; {total - at - HEADER_SIZE} follow")
        record = unpack_update(view[at:end])
        if record.kind is Kind.CURSOR_SHAPE:
            raise StreamProtocolError("a cursor shape travels alone, never in a batch")
        if records:
            if record.seq != records[0].seq:
                raise StreamProtocolError(f"records of updates {records[0].seq} and {record.seq} in one message")
            if records[-1].end_of_frame:
                raise StreamProtocolError("a record follows the one flagged END_OF_FRAME")
        records.append(record)
        at = end
    return records


@dataclass(frozen=True, slots=True)
class RecordScan:
    """What the relay reads of one binary message, from its headers only."""

    #: Pixels of UPDATE records (changes; refinements and cursor shapes count none).
    changed_px: int
    #: The update's sequence when the message ends it (its last record flagged END_OF_FRAME), else -1.
    end_of_frame: int
    #: The update's sequence (-1: a cursor shape, or not a well-formed stream message).
    seq: int
    #: Records in the message (0 when it is not a well-formed update).
    records: int = 1


_NOT_AN_UPDATE = RecordScan(0, -1, -1, 0)


def scan_records(data: bytes) -> RecordScan:
    """The headers of one binary message, without their payloads; never raises.

    A message that is not well-formed scans as no change and no end of frame: the relay forwards it and
    the viewer, which parses it whole, refuses it.
    """
    total = len(data)
    at = changed = count = 0
    seq = eof = -1
    while at + HEADER_SIZE <= total:
        magic, kind, flags, _monitor, _x, _y, w, h, _enc, record_seq, length = HEADER.unpack_from(data, at)
        if magic != MAGIC_VERSION or kind == Kind.CURSOR_SHAPE or (seq >= 0 and record_seq != seq):
            return _NOT_AN_UPDATE
        seq = record_seq
        if kind == Kind.UPDATE:
            changed += w * h
        at += HEADER_SIZE + length
        count += 1
        eof = record_seq if flags & Flags.END_OF_FRAME and at == total else -1
    if at != total:
        return _NOT_AN_UPDATE
    return RecordScan(changed, eof, seq, count)


def split_records(data: bytes) -> list[bytes]:
    """A batched message as one message a record (for viewers that read one record a message); the message
    itself when it is not a well-formed batch (the viewer refuses it as it is)."""
    records: list[bytes] = []
    at, total = 0, len(data)
    while at + HEADER_SIZE <= total:
        (length,) = _LENGTH.unpack_from(data, at + _LENGTH_AT)
        end = at + HEADER_SIZE + length
        if end > total:
            return [data]
        records.append(data[at:end])
        at = end
    return records if at == total and records else [data]


# --- text messages -----------------------------------------------------------------------

Coord = Annotated[int, msgspec.Meta(ge=0, le=MAX_COORD)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
Wheel = Annotated[int, msgspec.Meta(ge=-100, le=100)]
KeyCode = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9]+$")]
ShortText = Annotated[str, msgspec.Meta(max_length=256)]
LongText = Annotated[str, msgspec.Meta(max_length=2000)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Number = Annotated[float, msgspec.Meta(ge=0, le=1e12)]
MonitorIndex = Annotated[int, msgspec.Meta(ge=0, le=MAX_MONITORS - 1)]


class TextMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    """Base of every JSON message on the tunnel."""


class Ack(TextMessage, frozen=True, tag="ack"):
    """Viewer → agent: update ``seq`` has been drawn."""

    seq: Seq


class InputMouse(TextMessage, frozen=True, tag="input.mouse"):
    """Viewer → agent: pointer event in the selected monitor's pixel space.

    ``button`` follows ``MouseEvent.button`` (0 left, 1 middle, 2 right); ``dx``/``dy``
    are wheel notches (positive dy scrolls down).
    """

    x: Coord
    y: Coord
    action: Literal["move", "down", "up", "wheel"] = "move"
    button: Annotated[int, msgspec.Meta(ge=0, le=4)] = 0
    buttons: Annotated[int, msgspec.Meta(ge=0, le=31)] | None = None
    dx: Wheel = 0
    dy: Wheel = 0


class InputKey(TextMessage, frozen=True, tag="input.key"):
    """Viewer → agent: a physical key (``KeyboardEvent.code``) pressed or released."""

    code: KeyCode
    action: Literal["down", "up"]


class InputText(TextMessage, frozen=True, tag="input.text"):
    """Viewer → agent: characters to type that have no key code (IME, paste)."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_INPUT_TEXT)]


class Cursor(TextMessage, frozen=True, tag="cursor"):
    """Agent → viewer: pointer position in the selected monitor's pixel space."""

    x: Annotated[int, msgspec.Meta(ge=-MAX_COORD, le=MAX_COORD)]
    y: Annotated[int, msgspec.Meta(ge=-MAX_COORD, le=MAX_COORD)]
    visible: bool = True


class MonitorInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Geometry of one monitor in the X screen (index 0 = all monitors, as mss counts)."""

    x: Annotated[int, msgspec.Meta(ge=-MAX_COORD, le=MAX_COORD)]
    y: Annotated[int, msgspec.Meta(ge=-MAX_COORD, le=MAX_COORD)]
    w: Annotated[int, msgspec.Meta(ge=1, le=MAX_COORD)]
    h: Annotated[int, msgspec.Meta(ge=1, le=MAX_COORD)]
    primary: bool = False


class Monitors(TextMessage, frozen=True, tag="monitors"):
    """Agent → viewer: the monitor list and which one is streamed (sent before its frames)."""

    monitors: Annotated[list[MonitorInfo], msgspec.Meta(min_length=1, max_length=MAX_MONITORS)]
    selected: MonitorIndex


class MonitorSelect(TextMessage, frozen=True, tag="monitor.select"):
    """Viewer → agent: stream another monitor."""

    index: MonitorIndex


class Quality(TextMessage, frozen=True, tag="quality"):
    """Viewer → agent: trade image quality for bandwidth."""

    hint: Literal["auto", "low", "medium", "high"]


class Error(TextMessage, frozen=True, tag="error"):
    """Either way: something was refused (``code`` is machine-readable)."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    message: LongText = ""


class Stats(TextMessage, frozen=True, tag="stats"):
    """Agent → viewer: pipeline figures for the viewer's status line."""

    updates: Count = 0
    bytes: Count = 0
    quality: Annotated[int, msgspec.Meta(ge=0, le=100)] = 0
    in_flight: Count = 0
    skipped: Count = 0
    rtt_ms: Number = 0.0
    #: The agent's capture backend for this session ("x11", "wayland-mutter"), shown by the console.
    backend: Annotated[str, msgspec.Meta(max_length=32, pattern="^[a-z0-9-]*$")] = ""


StreamMessage = (
    Ack | InputMouse | InputKey | InputText | Cursor | Monitors | MonitorSelect | Quality | Error | Stats
)
InputMessage = InputMouse | InputKey | InputText

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[StreamMessage] = msgspec.json.Decoder(StreamMessage)


def encode_text(message: StreamMessage) -> str:
    """Serialize a text message to its JSON frame."""
    return _encoder.encode(message).decode()


def decode_text(data: str | bytes) -> StreamMessage:
    """Parse and validate one text frame from the peer."""
    if isinstance(data, str):
        try:
            raw = data.encode()
        except UnicodeEncodeError as exc:  # lone surrogates
            raise StreamProtocolError("text message is not valid UTF-8") from exc
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:
        raise StreamProtocolError(f"text message expected, got {type(data).__name__}")
    if len(raw) > MAX_TEXT_BYTES:
        raise StreamProtocolError(f"text message of {len(raw)} bytes exceeds {MAX_TEXT_BYTES}")
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise StreamProtocolError(f"invalid message: {exc}") from exc
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError, ValueError) as exc:
        raise StreamProtocolError(f"malformed message: {exc}") from exc
