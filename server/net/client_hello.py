"""The server name (SNI) of a TLS ClientHello, read from bytes that have not been handed to TLS yet.

Sans-I/O: :func:`server_name` takes the bytes received so far and answers :class:`NeedMore` (how
many bytes in all it must see), the name (``None`` when the client sent none), or raises
:class:`HelloError` — never anything else on peer input. The one-port listener (:mod:`.sni`) peeks
at a new connection with it before choosing the TLS context, as an SNI-routing load balancer does.

Bounds: the ClientHello may span several TLS records, but its handshake message is at most
:data:`MAX_HELLO_BYTES` (browsers send under 2 KiB, post-quantum key shares included), so a peer
can never make the listener wait for or buffer more than ~16 KiB.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Largest ClientHello handshake message accepted (body, without its 4-byte header).
MAX_HELLO_BYTES = 16 * 1024
#: Most bytes of the stream read to find it (the message cut into small records costs 5 bytes a record).
MAX_STREAM_BYTES = 2 * MAX_HELLO_BYTES
#: TLS record header: type, legacy version, length.
RECORD_HEADER = 5
_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_SERVER_NAME = 0x0000
_HOST_NAME = 0x00
_MAX_RECORD = 2**14 + 256
_MAX_NAME = 253


class HelloError(ValueError):
    """The bytes are not the start of a TLS ClientHello we accept (the peer's fault)."""


@dataclass(frozen=True)
class NeedMore:
    """Not enough bytes yet: ``total`` bytes from the start of the stream are needed (at least)."""

    total: int


def _handshake_bytes(data: bytes) -> tuple[bytes, int | None]:
    """The handshake bytes carried by the complete records at the start of ``data``, and the total
    length the stream needs for the next record when the first ones do not hold the whole message."""
    out = bytearray()
    offset = 0
    while True:
        if len(data) < offset + RECORD_HEADER:
            if offset + RECORD_HEADER > MAX_STREAM_BYTES:
                raise HelloError("ClientHello cut into too many records")
            return bytes(out), offset + RECORD_HEADER
        kind, major, length = data[offset], data[offset + 1], int.from_bytes(data[offset + 3:offset + 5], "big")
        if kind != _HANDSHAKE or major != 3:
            raise HelloError("not a TLS handshake record")
        if length == 0 or length > _MAX_RECORD:
            raise HelloError("TLS record length out of range")
        end = offset + RECORD_HEADER + length
        if end > MAX_STREAM_BYTES:
            raise HelloError("ClientHello cut into too many records")
        if len(data) < end:
            return bytes(out), end
        out += data[offset + RECORD_HEADER:end]
        offset = end
        if len(out) >= 4 and len(out) >= 4 + int.from_bytes(out[1:4], "big"):
            return bytes(out), None
        if len(out) > MAX_HELLO_BYTES + 4:
            raise HelloError("ClientHello too large")


class _Reader:
    """Bounds-checked reads over one message; running past the end is the peer's malformed input."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self._at + n > len(self._data):
            raise HelloError("ClientHello truncated")
        part = self._data[self._at:self._at + n]
        self._at += n
        return part

    def number(self, width: int) -> int:
        return int.from_bytes(self.take(width), "big")

    def vector(self, width: int) -> bytes:
        return self.take(self.number(width))

    @property
    def left(self) -> int:
        return len(self._data) - self._at


def server_name(data: bytes) -> NeedMore | str | None:
    """The ClientHello's host name (lower case, ASCII), ``None`` without one, or :class:`NeedMore`."""
    handshake, need = _handshake_bytes(data)
    if len(handshake) >= 4:
        if handshake[0] != _CLIENT_HELLO:
            raise HelloError("the first handshake message is not a ClientHello")
        size = int.from_bytes(handshake[1:4], "big")
        if size > MAX_HELLO_BYTES:
            raise HelloError("ClientHello too large")
    if need is not None:
        return NeedMore(need)
    size = int.from_bytes(handshake[1:4], "big")
    return _name_in(handshake[4:4 + size])


def _name_in(body: bytes) -> str | None:
    hello = _Reader(body)
    hello.take(2 + 32)  # legacy_version, random
    hello.vector(1)  # legacy_session_id
    hello.vector(2)  # cipher_suites
    hello.vector(1)  # legacy_compression_methods
    if hello.left == 0:
        return None  # no extensions at all
    extensions = _Reader(hello.vector(2))
    while extensions.left:
        kind = extensions.number(2)
        content = extensions.vector(2)
        if kind == _SERVER_NAME:
            return _host_name(content)
    return None


def _host_name(content: bytes) -> str | None:
    names = _Reader(_Reader(content).vector(2))
    while names.left:
        kind = names.number(1)
        name = names.vector(2)
        if kind != _HOST_NAME:
            continue
        if not 0 < len(name) <= _MAX_NAME or not name.isascii():
            raise HelloError("server name is not an ASCII host name")
        return name.decode("ascii").lower()
    return None
