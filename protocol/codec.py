"""Encode and decode control-channel messages.

``decode`` never raises anything but :class:`~protocol.errors.RemoteProtocolError`
subclasses, each carrying the code to answer with and, when known, the id it replies to.
"""

from __future__ import annotations

import msgspec

from . import limits
from .errors import InvalidMessage, MalformedMessage, MessageTooLarge, UnknownMessageType, UnsupportedVersion
from .messages import Message
from .version import MAX_VERSION, MIN_VERSION

_encoder = msgspec.json.Encoder()


class _Envelope(msgspec.Struct):
    """The common header read first, so errors can name the message they refer to."""

    type: str
    v: int = 1
    id: str | None = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)


def _all_subclasses(cls: type[Message]) -> list[type[Message]]:
    found: list[type[Message]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


class Registry:
    """Message type name → decoder, built from every imported :class:`Message` subclass."""

    def __init__(self) -> None:
        self._decoders: dict[str, msgspec.json.Decoder[Message]] = {}

    def refresh(self) -> None:
        for cls in _all_subclasses(Message):
            name = cls.type_name()
            if name not in self._decoders:
                self._decoders[name] = msgspec.json.Decoder(cls)

    def decoder_for(self, name: str) -> msgspec.json.Decoder[Message] | None:
        decoder = self._decoders.get(name)
        if decoder is None:
            self.refresh()
            decoder = self._decoders.get(name)
        return decoder

    def names(self) -> list[str]:
        self.refresh()
        return sorted(self._decoders)


registry = Registry()


def encode(message: Message) -> str:
    """Serialize a message to its JSON text frame."""
    return _encoder.encode(message).decode()


def decode(data: str | bytes, *, max_bytes: int = limits.MAX_CONTROL_MESSAGE_BYTES) -> Message:
    """Parse and validate one text frame from the peer."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise MessageTooLarge(f"message of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        envelope = _envelope_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidMessage(f"bad envelope: {exc}") from exc
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"not a JSON object: {exc}") from exc
    valid_id = isinstance(envelope.id, str) and 0 < len(envelope.id) <= limits.MAX_ID_LEN
    reply_to = envelope.id if valid_id else None
    if not MIN_VERSION <= envelope.v <= MAX_VERSION:
        raise UnsupportedVersion(f"message version {envelope.v} not supported", in_reply_to=reply_to)
    decoder = registry.decoder_for(envelope.type)
    if decoder is None:
        raise UnknownMessageType(f"unknown message type {envelope.type[:64]!r}", in_reply_to=reply_to)
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidMessage(f"invalid {envelope.type}: {exc}", in_reply_to=reply_to) from exc
    except (msgspec.DecodeError, RecursionError) as exc:
        raise MalformedMessage(f"malformed {envelope.type}: {exc}", in_reply_to=reply_to) from exc
