"""Remote shell messages over the session tunnel: a pty on the device, a terminal in the console.

Theory of operation
-------------------
The shell shares the session tunnel with the screen (:mod:`protocol.stream`, binary magic
``0xA1``) and the toolkit (:mod:`protocol.toolkit`, ``0xB1``). Its **binary** messages start
with ``0xC1`` and carry raw terminal bytes: viewer → agent the keystrokes (Ctrl-C is just
``\\x03``; the pty's line discipline turns it into SIGINT), agent → viewer the pty's output.
Its **text** messages carry ``type`` tags ``shell.*``::

    viewer → agent   shell.open {cols, rows, root}   at most one shell per session at a time
                     shell.resize {cols, rows}       TIOCSWINSZ on the pty (SIGWINCH to the shell)
                     shell.close {idle}               hang up (SIGHUP to the shell's process group);
                                                      idle: the server's shell idle timeout sent it
    agent → viewer   shell.opened {user, uid, tty, pid, root}
                     shell.exit {status, reason}      status: exit code, or -N for signal N
                     shell.error {code, message}      refused or failed; no shell runs

The relay (server side) records the agent's ``0xC1`` frames as asciicast v2 output events and
never the viewer's: a recording holds what the terminal showed, never what the technician typed.

Rules for this file: no sockets, no asyncio, no clocks. Decoding peer input never raises
anything but :class:`ShellProtocolError`.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .errors import RemoteProtocolError

MAGIC_VERSION = 0xC1
#: Largest terminal payload in one binary message (a pty read; far below the tunnel's cap).
MAX_DATA = 64 * 1024
MAX_TEXT_BYTES = 4096
#: The text prefix every shell message starts with (msgspec writes the tag first).
TEXT_PREFIX = '{"type":"shell.'

Cols = Annotated[int, msgspec.Meta(ge=1, le=1000)]
Rows = Annotated[int, msgspec.Meta(ge=1, le=500)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z_]+$")]


class ShellProtocolError(RemoteProtocolError):
    """Anything wrong with a shell message. The only error decoders raise."""

    code = "shell_invalid"


def pack_data(data: bytes) -> bytes:
    """One binary shell message carrying ``data`` (1..MAX_DATA bytes)."""
    if not 1 <= len(data) <= MAX_DATA:
        raise ShellProtocolError(f"shell data of {len(data)} bytes outside 1..{MAX_DATA}")
    return bytes((MAGIC_VERSION,)) + data


def is_data(data: bytes | bytearray | memoryview) -> bool:
    """Is this binary message shell data? Only the first byte is read."""
    return len(data) >= 1 and data[0] == MAGIC_VERSION


def unpack_data(data: bytes | bytearray | memoryview) -> bytes:
    """The terminal bytes of one binary shell message from the peer."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ShellProtocolError(f"binary message expected, got {type(data).__name__}")
    if not is_data(data):
        raise ShellProtocolError("not a shell message")
    if not 2 <= len(data) <= MAX_DATA + 1:
        raise ShellProtocolError(f"shell data of {len(data) - 1} bytes outside 1..{MAX_DATA}")
    return bytes(data[1:])


class ShellMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    """Base of every shell JSON message."""


class Open(ShellMessage, frozen=True, tag="shell.open"):
    """Viewer → agent: start a shell of this size (as root only where the device allows it)."""

    cols: Cols = 80
    rows: Rows = 24
    root: bool = False


class Resize(ShellMessage, frozen=True, tag="shell.resize"):
    """Viewer → agent: the terminal's new size."""

    cols: Cols
    rows: Rows


class Close(ShellMessage, frozen=True, tag="shell.close"):
    """Viewer → agent: hang up the shell. ``idle``: the relay sends it, its shell idle timeout ran out (the agent
    names that reason in ``shell.exit``; the server audits its own hang-up itself)."""

    idle: bool = False


class Opened(ShellMessage, frozen=True, tag="shell.opened"):
    """Agent → viewer: the shell runs, as ``user`` on pty ``tty``."""

    user: Annotated[str, msgspec.Meta(max_length=64)]
    uid: Annotated[int, msgspec.Meta(ge=0, le=2**32)]
    tty: Annotated[str, msgspec.Meta(max_length=64)]
    pid: Annotated[int, msgspec.Meta(ge=1, le=2**32)]
    root: bool = False


class Exit(ShellMessage, frozen=True, tag="shell.exit"):
    """Agent → viewer: the shell ended; ``status`` is its exit code, or -N when signal N ended it."""

    status: Annotated[int, msgspec.Meta(ge=-128, le=255)]
    reason: Annotated[str, msgspec.Meta(max_length=200)] = ""


class Error(ShellMessage, frozen=True, tag="shell.error"):
    """Agent → viewer (or the relay): the shell was refused or failed."""

    code: Code
    message: Annotated[str, msgspec.Meta(max_length=500)] = ""


ShellAny = Open | Resize | Close | Opened | Exit | Error

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[ShellAny] = msgspec.json.Decoder(ShellAny)

#: The kinds each side may send.
FROM_VIEWER: tuple[type, ...] = (Open, Resize, Close)
FROM_AGENT: tuple[type, ...] = (Opened, Exit, Error)


def encode_text(message: ShellAny) -> str:
    """Serialize a shell message to its JSON frame."""
    return _encoder.encode(message).decode()


def decode_text(data: str | bytes) -> ShellAny:
    """Parse and validate one shell text frame from the peer."""
    if isinstance(data, str):
        try:
            raw = data.encode()
        except UnicodeEncodeError as exc:
            raise ShellProtocolError("text message is not valid UTF-8") from exc
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:
        raise ShellProtocolError(f"text message expected, got {type(data).__name__}")
    if len(raw) > MAX_TEXT_BYTES:
        raise ShellProtocolError(f"text message of {len(raw)} bytes exceeds {MAX_TEXT_BYTES}")
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise ShellProtocolError(f"invalid message: {exc}") from exc
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError, ValueError) as exc:
        raise ShellProtocolError(f"malformed message: {exc}") from exc
