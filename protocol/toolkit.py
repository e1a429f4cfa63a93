"""In-session toolkit messages: chat, file transfer and clipboard, over the session tunnel.

Theory of operation
-------------------
The toolkit shares the screen session's tunnel (:mod:`protocol.stream`) and never touches its
messages: its **text** messages carry ``type`` tags of their own (``toolkit.*``, ``chat.*``,
``file.*``, ``clip.*``) and its **binary** messages, file chunks, start with their own magic
byte (``0xB1``, where screen updates start with ``0xA1``). So a receiver tries the stream
decoder first and this one second, and either side tells the two binary kinds apart by the
first byte.

A chunk is a 13-byte big-endian header then the bytes::

    magic     u8   0xB1 (high nibble 0xB = Helpline toolkit, low nibble = version 1)
    transfer  u32  the transfer's number, chosen by whoever started it (1..2**32-1)
    offset    u64  where these bytes go in the file

**Technician → device** (``file.offer`` name/size/sha256 → ``file.accept`` offset → chunks →
``file.ack`` offset after each chunk written → ``file.done`` once the SHA-256 of the whole file
matched, or ``file.error``). ``file.accept``'s offset is where an interrupted transfer of the
same file (same size and hash) stopped, so a resumed transfer sends at most the chunk that was
in flight again. **Device → technician** (``file.fetch`` path/offset → ``file.start``
name/size → chunks → ``file.end`` sha256 of the whole file; the viewer acks with ``file.ack``).
Whoever starts a transfer numbers it; the viewer's numbers are odd, the agent never starts one.

``toolkit.caps`` (agent → viewer, first) says what the session may do: the agent decides, from
the user's consent, the grant and its local policy, and refuses the rest whatever is asked.

Rules for this file: no sockets, no asyncio, no clocks. Decoding peer input never raises
anything but :class:`ToolkitProtocolError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from .errors import RemoteProtocolError

MAGIC_VERSION = 0xB1
CHUNK_HEADER = struct.Struct(">BIQ")
CHUNK_HEADER_SIZE = CHUNK_HEADER.size
#: Largest chunk payload (the tunnel's frames stay far below its 8 MiB cap).
MAX_CHUNK = 256 * 1024
#: Largest file the protocol can describe at all (policies and the server set lower caps).
MAX_FILE_BYTES = 64 * 1024**3
#: Largest text message of the toolkit (the tunnel's own text limit: the helper relay carries no more).
MAX_TEXT_BYTES = 64 * 1024
#: Characters in one chat message.
MAX_CHAT_CHARS = 2000
#: Characters of clipboard text synced at once.
MAX_CLIPBOARD_CHARS = 8000
#: Characters of a path the technician may name.
MAX_PATH_CHARS = 1024
MAX_TRANSFER = 2**32 - 1
MAX_OFFSET = 2**64 - 1
#: What a session may do beyond view/control; the order the prompt lists them in.
CAPABILITIES = ("chat", "files", "clipboard", "shell")


class ToolkitProtocolError(RemoteProtocolError):
    """Anything wrong with a toolkit message (binary or text). The only error decoders raise."""

    code = "toolkit_invalid"


@dataclass(frozen=True, slots=True)
class Chunk:
    """One decoded file chunk."""

    transfer: int
    offset: int
    data: bytes


def pack_chunk(transfer: int, offset: int, data: bytes) -> bytes:
    """Header + bytes of one chunk; refuses what the peer would refuse."""
    _check_chunk(transfer, offset, len(data))
    return CHUNK_HEADER.pack(MAGIC_VERSION, transfer, offset) + data


def is_chunk(data: bytes | bytearray | memoryview) -> bool:
    """Is this binary message a toolkit chunk (not a screen update)? Only the first byte is read."""
    return len(data) >= 1 and data[0] == MAGIC_VERSION


def unpack_chunk(data: bytes | bytearray | memoryview) -> Chunk:
    """Parse one chunk from the peer."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ToolkitProtocolError(f"binary chunk expected, got {type(data).__name__}")
    if len(data) < CHUNK_HEADER_SIZE:
        raise ToolkitProtocolError(f"chunk of {len(data)} bytes is shorter than its header")
    magic, transfer, offset = CHUNK_HEADER.unpack_from(data)
    if magic != MAGIC_VERSION:
        raise ToolkitProtocolError(f"bad magic/version byte {magic:#x}")
    _check_chunk(transfer, offset, len(data) - CHUNK_HEADER_SIZE)
    return Chunk(transfer, offset, bytes(data[CHUNK_HEADER_SIZE:]))


def _check_chunk(transfer: int, offset: int, length: int) -> None:
    if not 1 <= transfer <= MAX_TRANSFER:
        raise ToolkitProtocolError(f"transfer {transfer} out of range")
    if not 0 <= offset <= MAX_FILE_BYTES:
        raise ToolkitProtocolError(f"offset {offset} beyond {MAX_FILE_BYTES}")
    if not 1 <= length <= MAX_CHUNK:
        raise ToolkitProtocolError(f"chunk of {length} bytes outside 1..{MAX_CHUNK}")


# --- text messages -----------------------------------------------------------------------

Transfer = Annotated[int, msgspec.Meta(ge=1, le=MAX_TRANSFER)]
Size = Annotated[int, msgspec.Meta(ge=0, le=MAX_FILE_BYTES)]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
#: A file name as the other end wrote it: the receiver keeps only a safe last component.
FileName = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Path = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PATH_CHARS)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z_]+$")]
Capability = Literal["chat", "files", "clipboard", "shell"]
#: No control characters but newline and tab (the transcript is shown and stored as text).
ChatText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CHAT_CHARS,
                                       pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]
ClipText = Annotated[str, msgspec.Meta(max_length=MAX_CLIPBOARD_CHARS)]
Who = Annotated[str, msgspec.Meta(max_length=128)]


class ToolkitMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    """Base of every toolkit JSON message."""


class Caps(ToolkitMessage, frozen=True, tag="toolkit.caps"):
    """Agent → viewer: what this session may do, and the largest file either way."""

    allowed: Annotated[list[Capability], msgspec.Meta(max_length=4)]
    max_file_bytes: Size = 0
    #: Why a capability is missing, e.g. {"files": "off by this device's policy"}.
    refused: dict[Capability, Annotated[str, msgspec.Meta(max_length=200)]] = {}


class ChatSend(ToolkitMessage, frozen=True, tag="chat.send"):
    """Viewer → agent: a line for the person at the device."""

    text: ChatText


class ChatMessage(ToolkitMessage, frozen=True, tag="chat.message"):
    """Agent → viewer: one line of the transcript (the technician's echoed, the user's as typed)."""

    seq: Annotated[int, msgspec.Meta(ge=0, le=2**31)]
    sender: Literal["technician", "user"]
    text: ChatText
    at: Annotated[float, msgspec.Meta(ge=0, le=1e11)]
    name: Who = ""


class FileOffer(ToolkitMessage, frozen=True, tag="file.offer"):
    """Viewer → agent: a file for the user's Downloads folder."""

    transfer: Transfer
    name: FileName
    size: Size
    sha256: Sha256


class FileAccept(ToolkitMessage, frozen=True, tag="file.accept"):
    """Agent → viewer: send from ``offset`` (where an interrupted transfer of the same file stopped)."""

    transfer: Transfer
    offset: Size = 0
    chunk: Annotated[int, msgspec.Meta(ge=1, le=MAX_CHUNK)] = MAX_CHUNK
    window: Annotated[int, msgspec.Meta(ge=1, le=64)] = 8


class FileAck(ToolkitMessage, frozen=True, tag="file.ack"):
    """Receiver → sender: every byte before ``offset`` is written."""

    transfer: Transfer
    offset: Size


class FileDone(ToolkitMessage, frozen=True, tag="file.done"):
    """Agent → viewer: the file is complete, its SHA-256 matched, and it is saved as ``name``."""

    transfer: Transfer
    name: FileName
    size: Size
    sha256: Sha256


class FileFetch(ToolkitMessage, frozen=True, tag="file.fetch"):
    """Viewer → agent: send me ``path`` (from ``offset`` when resuming)."""

    transfer: Transfer
    path: Path
    offset: Size = 0


class FileStart(ToolkitMessage, frozen=True, tag="file.start"):
    """Agent → viewer: ``path`` is coming, ``size`` bytes, chunks from ``offset``."""

    transfer: Transfer
    name: FileName
    size: Size
    offset: Size = 0


class FileEnd(ToolkitMessage, frozen=True, tag="file.end"):
    """Agent → viewer: the last chunk is sent; the SHA-256 of the whole file (name and size again, for the audit)."""

    transfer: Transfer
    sha256: Sha256
    name: Annotated[str, msgspec.Meta(max_length=255)] = ""
    size: Size = 0


class FileError(ToolkitMessage, frozen=True, tag="file.error"):
    """Either way: the transfer is refused or failed (nothing more comes for it)."""

    transfer: Transfer
    code: Code
    message: Annotated[str, msgspec.Meta(max_length=500)] = ""


class ClipSet(ToolkitMessage, frozen=True, tag="clip.set"):
    """Either way: the clipboard's text (viewer → agent on paste; agent → viewer when it changed)."""

    text: ClipText


class ClipSync(ToolkitMessage, frozen=True, tag="clip.sync"):
    """Viewer → agent: switch clipboard sync on or off, per direction."""

    to_device: bool = False
    from_device: bool = False


ToolkitAny = (Caps | ChatSend | ChatMessage | FileOffer | FileAccept | FileAck | FileDone | FileFetch | FileStart
              | FileEnd | FileError | ClipSet | ClipSync)

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[ToolkitAny] = msgspec.json.Decoder(ToolkitAny)


def encode_text(message: ToolkitAny) -> str:
    """Serialize a toolkit message to its JSON frame."""
    return _encoder.encode(message).decode()


def decode_text(data: str | bytes) -> ToolkitAny:
    """Parse and validate one toolkit text frame from the peer."""
    if isinstance(data, str):
        try:
            raw = data.encode()
        except UnicodeEncodeError as exc:
            raise ToolkitProtocolError("text message is not valid UTF-8") from exc
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:
        raise ToolkitProtocolError(f"text message expected, got {type(data).__name__}")
    if len(raw) > MAX_TEXT_BYTES:
        raise ToolkitProtocolError(f"text message of {len(raw)} bytes exceeds {MAX_TEXT_BYTES}")
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise ToolkitProtocolError(f"invalid message: {exc}") from exc
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError, ValueError) as exc:
        raise ToolkitProtocolError(f"malformed message: {exc}") from exc
