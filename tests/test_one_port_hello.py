"""The ClientHello reader of the one-port listener (server/net/client_hello.py), on ClientHellos made by OpenSSL."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.net.client_hello import MAX_HELLO_BYTES, HelloError, NeedMore, server_name


def _client_hello(name: str | None) -> bytes:
    """The first flight of a real TLS 1.3 client (OpenSSL through the ssl module), SNI ``name`` or none."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if name is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # only the ClientHello is made here, nothing is verified or trusted
    conn = ctx.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def _records(hello: bytes, size: int) -> bytes:
    """The same handshake message cut into TLS records of ``size`` bytes (RFC 8446 allows it)."""
    body = hello[5:5 + int.from_bytes(hello[3:5], "big")]
    out = bytearray()
    for at in range(0, len(body), size):
        part = body[at:at + size]
        out += b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
    return bytes(out)


def test_the_server_name_is_read_in_lower_case() -> None:
    """The host name a client sends is found, case folded; a client sending none gives None."""
    assert server_name(_client_hello("Agents.Helpline.Example.org")) == "agents.helpline.example.org"
    assert server_name(_client_hello(None)) is None


def test_every_prefix_asks_for_more_then_the_whole_hello_answers() -> None:
    """Any prefix answers NeedMore with a total beyond it and never beyond the hello; the whole hello answers."""
    hello = _client_hello("agents.localhost")
    for cut in range(len(hello)):
        answer = server_name(hello[:cut])
        assert isinstance(answer, NeedMore) and cut < answer.total <= len(hello), (cut, answer)
    assert server_name(hello + b"\x17\x03\x03\x00\x05trail") == "agents.localhost"  # later bytes are not read


@pytest.mark.parametrize("size", [1, 7, 100])
def test_a_hello_cut_into_several_records_is_joined(size: int) -> None:
    """A ClientHello spread over many records is read across them (a byte a record at worst)."""
    split = _records(_client_hello("agents.localhost"), size)
    assert server_name(split) == "agents.localhost"
    assert isinstance(server_name(split[:-1]), NeedMore)


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # plain HTTP on the TLS port
    b"\x17\x03\x03\x00\x10" + bytes(16),  # application data first
    b"\x16\x03\x01\x00\x00",  # an empty record
    b"\x16\x03\x01\x48\x01" + bytes(10),  # a record longer than TLS allows
    b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",  # a ServerHello
    b"\x16\x03\x01\x00\x04\x01\x00\x00\x00",  # a ClientHello of nothing
])
def test_what_is_not_a_client_hello_is_refused(data: bytes) -> None:
    """Bytes that are not the start of a ClientHello raise HelloError (the listener closes the connection)."""
    with pytest.raises(HelloError):
        server_name(data)


def test_oversized_and_overfragmented_hellos_are_refused_early() -> None:
    """A ClientHello declaring more than MAX_HELLO_BYTES is refused from its header; a large one cut into
    tiny records is refused before the reader would need tens of KiB."""
    header = (MAX_HELLO_BYTES + 1).to_bytes(3, "big")
    with pytest.raises(HelloError, match="too large"):
        server_name(b"\x16\x03\x01\x00\x04\x01" + header)
    body = b"\x01" + (MAX_HELLO_BYTES - 4).to_bytes(3, "big") + bytes(MAX_HELLO_BYTES - 4)
    tiny = _records(b"\x16\x03\x01" + len(body).to_bytes(2, "big") + body, 1)
    with pytest.raises(HelloError, match="records"):
        server_name(tiny)


def test_a_non_ascii_name_is_refused() -> None:
    """A host name with bytes outside ASCII (never sent by a browser: IDNs go as A-labels) is refused."""
    hello = bytearray(_client_hello("agents.localhost"))
    at = bytes(hello).index(b"agents.localhost")
    hello[at] = 0xE9
    with pytest.raises(HelloError):
        server_name(bytes(hello))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=700))
def test_hostile_bytes_only_ever_raise_hello_error(noise: bytes, at: int) -> None:
    """Random bytes, alone or written over a real ClientHello, give a name, None, NeedMore or HelloError."""
    hello = bytearray(_client_hello("agents.localhost"))
    hello[at:at + len(noise)] = noise
    for data in (noise, bytes(hello)):
        try:
            answer = server_name(data)
        except HelloError:
            continue
        assert answer is None or isinstance(answer, str | NeedMore)
