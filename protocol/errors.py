"""Errors raised by the sans-I/O protocol layer.

Hierarchy::

    ProtocolError                 base; carries the ``code`` to send back in an ``error`` message
    ├── RemoteProtocolError       the peer sent something wrong (its fault)
    │   ├── MessageTooLarge       over the size limit (``too_large``; close with policy code)
    │   ├── MalformedMessage      not JSON / not an object (``malformed``)
    │   ├── UnknownMessageType    ``type`` not known (``unknown_type``)
    │   ├── InvalidMessage        wrong field type, missing field, limit exceeded (``invalid``)
    │   ├── UnsupportedVersion    no common protocol version (``unsupported_version``)
    │   └── UnexpectedMessage     valid message in the wrong state (``unexpected``)
    └── LocalProtocolError        we tried to do something the protocol forbids (our bug)

Decoding peer input never raises anything outside :class:`RemoteProtocolError`.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every protocol error; ``code`` is the machine-readable reason."""

    code = "protocol_error"

    def __init__(self, message: str, *, in_reply_to: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.in_reply_to = in_reply_to


class RemoteProtocolError(ProtocolError):
    """The peer violated the protocol."""


class MessageTooLarge(RemoteProtocolError):
    code = "too_large"


class MalformedMessage(RemoteProtocolError):
    code = "malformed"


class UnknownMessageType(RemoteProtocolError):
    code = "unknown_type"


class InvalidMessage(RemoteProtocolError):
    code = "invalid"


class UnsupportedVersion(RemoteProtocolError):
    code = "unsupported_version"


class UnexpectedMessage(RemoteProtocolError):
    code = "unexpected"


class LocalProtocolError(ProtocolError):
    """This side tried to send something the protocol forbids."""

    code = "local_error"
