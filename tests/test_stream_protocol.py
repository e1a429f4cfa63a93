"""Tests for protocol.stream: binary update header and tunnel text messages."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import stream
from protocol.stream import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    Encoding,
    Flags,
    Kind,
    StreamProtocolError,
    decode_text,
    encode_text,
    pack_cursor_shape,
    pack_update,
    unpack_update,
)


def _header(**overrides: int) -> bytes:
    fields = {
        "magic": stream.MAGIC_VERSION,
        "kind": 1,
        "flags": 0,
        "monitor": 1,
        "x": 0,
        "y": 0,
        "w": 2,
        "h": 2,
        "encoding": 1,
        "seq": 7,
        "length": 3,
    }
    fields.update(overrides)
    return stream.HEADER.pack(*fields.values())


def test_update_round_trip() -> None:
    """A packed update unpacks to the same fields and payload."""
    data = pack_update(
        kind=Kind.REFRESH, monitor=2, x=10, y=20, w=30, h=40, encoding=Encoding.PNG, seq=99,
        payload=b"abc", flags=Flags.END_OF_FRAME,
    )
    update = unpack_update(data)
    assert (update.kind, update.monitor, update.x, update.y, update.w, update.h) == (Kind.REFRESH, 2, 10, 20, 30, 40)
    assert (update.encoding, update.seq, update.payload, update.end_of_frame) == (Encoding.PNG, 99, b"abc", True)
    assert len(data) == HEADER_SIZE + 3


@pytest.mark.parametrize(
    ("overrides", "payload"),
    [
        ({"magic": 0xA2}, b"abc"),
        ({"kind": 0}, b"abc"),
        ({"encoding": 9}, b"abc"),
        ({"flags": 0x80}, b"abc"),
        ({"w": 0}, b"abc"),
        ({"h": 8193}, b"abc"),
        ({"x": 65535, "w": 1}, b"abc"),
        ({"length": 4}, b"abc"),
        ({"encoding": 0, "length": 3}, b"abc"),
        ({"length": MAX_PAYLOAD + 1}, b""),
    ],
)
def test_unpack_rejects_bad_headers(overrides: dict[str, int], payload: bytes) -> None:
    """Every malformed header field is refused with StreamProtocolError."""
    with pytest.raises(StreamProtocolError):
        unpack_update(_header(**overrides) + payload)


def test_unpack_rejects_short_and_non_bytes() -> None:
    """Truncated headers and text given to the binary decoder are refused."""
    with pytest.raises(StreamProtocolError):
        unpack_update(b"\xa1\x01")
    with pytest.raises(StreamProtocolError):
        unpack_update("text")  # type: ignore[arg-type]


def test_pack_refuses_oversized_payload() -> None:
    """The sender refuses to build what the receiver would refuse."""
    with pytest.raises(StreamProtocolError):
        pack_update(kind=Kind.UPDATE, monitor=0, x=0, y=0, w=1, h=1, encoding=Encoding.JPEG, seq=0,
                    payload=b"\0" * (MAX_PAYLOAD + 1))


TEXT_MESSAGES: list[stream.StreamMessage] = [
    stream.Ack(seq=5),
    stream.InputMouse(x=1, y=2, action="down", button=2, buttons=4),
    stream.InputMouse(x=1, y=2, action="wheel", dy=-3),
    stream.InputKey(code="KeyA", action="down"),
    stream.InputText(text="héllo ✓"),
    stream.Cursor(x=-5, y=7, visible=False),
    stream.Monitors(monitors=[stream.MonitorInfo(0, 0, 1920, 1080, True)], selected=0),
    stream.MonitorSelect(index=1),
    stream.Quality(hint="low"),
    stream.Error(code="refused", message="view only"),
    stream.Stats(updates=3, bytes=100, quality=70, in_flight=1, skipped=2, rtt_ms=3.5),
]


@pytest.mark.parametrize("message", TEXT_MESSAGES, ids=lambda m: type(m).__name__)
def test_text_round_trip(message: stream.StreamMessage) -> None:
    """Every text message type survives encode/decode unchanged, from str or bytes."""
    text = encode_text(message)
    assert decode_text(text) == message
    assert decode_text(text.encode()) == message


@pytest.mark.parametrize(
    "payload",
    [
        '{"type": "input.text", "text": "' + "x" * 257 + '"}',
        '{"type": "input.text", "text": ""}',
        '{"type": "input.key", "code": "Key A", "action": "down"}',
        '{"type": "input.key", "code": "KeyA", "action": "press"}',
        '{"type": "input.mouse", "x": -1, "y": 0}',
        '{"type": "input.mouse", "x": 0, "y": 0, "dy": 1000}',
        '{"type": "ack", "seq": 4294967296}',
        '{"type": "ack", "seq": 1, "extra": 1}',
        '{"type": "monitor.select", "index": 16}',
        '{"type": "nope"}',
        '{"seq": 1}',
        "[]",
        "not json",
        '"\\ud800"',
        "\ud800",
        "{" * 100000,
    ],
)
def test_decode_text_rejects_invalid(payload: str) -> None:
    """Invalid, oversized, unknown or malformed text is refused with StreamProtocolError."""
    with pytest.raises(StreamProtocolError):
        decode_text(payload)


def test_decode_text_rejects_non_text() -> None:
    """A non-str/bytes object is refused, not crashed on."""
    with pytest.raises(StreamProtocolError):
        decode_text(12)  # type: ignore[arg-type]


def test_error_code_is_documented() -> None:
    """StreamProtocolError carries a machine-readable code usable in an error reply."""
    try:
        decode_text("{}")
    except StreamProtocolError as exc:
        reply = json.loads(encode_text(stream.Error(code=exc.code, message=exc.message[:2000])))
        assert reply["code"] == "stream_invalid"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_unpack_arbitrary_bytes_only_raises_protocol_error(data: bytes) -> None:
    """Arbitrary bytes either decode or raise StreamProtocolError, nothing else."""
    try:
        unpack_update(data)
    except StreamProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=HEADER_SIZE - 1, max_size=HEADER_SIZE + 8).map(lambda b: b"\xa1" + b[1:]))
def test_unpack_arbitrary_headers_only_raises_protocol_error(data: bytes) -> None:
    """Headers with the right magic but random fields decode or raise StreamProtocolError."""
    try:
        update = unpack_update(data)
    except StreamProtocolError:
        return
    assert update.x + update.w <= stream.MAX_COORD


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_decode_arbitrary_text_only_raises_protocol_error(data: str | bytes) -> None:
    """Arbitrary text/bytes either decode or raise StreamProtocolError, nothing else."""
    try:
        decode_text(data)
    except StreamProtocolError:
        pass


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["ack", "input.mouse", "input.key", "input.text", "cursor", "monitors", "monitor.select",
                     "quality", "error", "stats"]),
    st.dictionaries(st.sampled_from(["seq", "x", "y", "action", "button", "code", "text", "monitors",
                                     "selected", "index", "hint", "message", "dy"]), _json_values, max_size=5),
)
def test_decode_structured_garbage_only_raises_protocol_error(kind: str, fields: dict[str, object]) -> None:
    """Well-formed JSON with a known type and random fields decodes or raises StreamProtocolError."""
    try:
        message = decode_text(json.dumps({"type": kind, **fields}))
    except StreamProtocolError:
        return
    assert decode_text(encode_text(message)) == message


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([Kind.UPDATE, Kind.REFRESH]), st.integers(0, 255), st.integers(0, 60000), st.integers(0, 60000),
    st.integers(1, 5000), st.integers(1, 5000), st.sampled_from([Encoding.JPEG, Encoding.PNG, Encoding.ZLIB]),
    st.integers(0, 2**32 - 1), st.binary(max_size=100), st.sampled_from(list(Flags)),
)
def test_update_round_trip_property(
    kind: Kind, monitor: int, x: int, y: int, w: int, h: int, encoding: Encoding, seq: int, payload: bytes,
    flags: Flags,
) -> None:
    """Any valid update round-trips; any invalid one is refused at pack time."""
    try:
        data = pack_update(kind=kind, monitor=monitor, x=x, y=y, w=w, h=h, encoding=encoding, seq=seq,
                           payload=payload, flags=flags)
    except StreamProtocolError:
        assert x + w > stream.MAX_COORD or y + h > stream.MAX_COORD
        return
    update = unpack_update(data)
    assert (update.kind, update.monitor, update.x, update.y, update.w, update.h, update.encoding, update.seq,
            update.payload, update.flags) == (kind, monitor, x, y, w, h, encoding, seq, payload, flags)


def test_header_layout_is_big_endian() -> None:
    """The header fields sit where the documented layout says (browser decoders rely on it)."""
    data = pack_update(kind=Kind.UPDATE, monitor=3, x=0x0102, y=0x0304, w=5, h=6, encoding=Encoding.JPEG,
                       seq=0x0A0B0C0D, payload=b"zz", flags=Flags.END_OF_FRAME)
    assert data[:4] == bytes([0xA1, 1, 1, 3])
    assert struct.unpack(">HHHH", data[4:12]) == (0x0102, 0x0304, 5, 6)
    assert data[12] == 1
    assert struct.unpack(">II", data[13:21]) == (0x0A0B0C0D, 2)


def test_cursor_shape_round_trip() -> None:
    """A cursor shape carries its size, hotspot and RGBA pixels through pack/unpack."""
    rgba = bytes(range(256))[: 8 * 8 * 4 // 2] * 2
    update = unpack_update(pack_cursor_shape(w=8, h=8, hot_x=3, hot_y=7, rgba=rgba, seq=4, monitor=1))
    assert (update.kind, update.encoding, update.w, update.h, update.x, update.y) == (
        Kind.CURSOR_SHAPE, Encoding.RGBA, 8, 8, 3, 7)
    assert (update.payload, update.seq, update.monitor, update.end_of_frame) == (rgba, 4, 1, False)


@pytest.mark.parametrize(
    ("overrides", "size"),
    [
        ({"kind": 3, "encoding": 1}, 3),  # cursor shape must be RGBA
        ({"kind": 1, "encoding": 4, "length": 16}, 16),  # RGBA only for cursor shapes
        ({"kind": 3, "encoding": 4, "length": 15}, 15),  # wrong RGBA length
        ({"kind": 3, "encoding": 4, "w": 129, "h": 1, "length": 516}, 516),  # too wide
        ({"kind": 3, "encoding": 4, "x": 2, "length": 16}, 16),  # hotspot outside
        ({"kind": 3, "encoding": 4, "flags": 1, "length": 16}, 16),  # END_OF_FRAME on a shape
    ],
)
def test_unpack_rejects_bad_cursor_shapes(overrides: dict[str, int], size: int) -> None:
    """Cursor shapes outside the documented limits are refused with StreamProtocolError."""
    with pytest.raises(StreamProtocolError):
        unpack_update(_header(**overrides) + b"\0" * size)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 140), st.integers(1, 140), st.integers(0, 150), st.integers(0, 150), st.integers(0, 2**32 - 1))
def test_cursor_shape_property(w: int, h: int, hot_x: int, hot_y: int, seq: int) -> None:
    """A shape within 128x128 with its hotspot inside round-trips; anything else is refused at pack time."""
    rgba = b"\x7f" * (w * h * 4)
    try:
        data = pack_cursor_shape(w=w, h=h, hot_x=hot_x, hot_y=hot_y, rgba=rgba, seq=seq)
    except StreamProtocolError:
        assert max(w, h) > stream.MAX_CURSOR_SIDE or hot_x >= w or hot_y >= h
        return
    update = unpack_update(data)
    assert (update.w, update.h, update.x, update.y, update.payload, update.seq) == (w, h, hot_x, hot_y, rgba, seq)
