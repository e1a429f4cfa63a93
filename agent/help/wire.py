"""The local help protocol: ``helpline help`` (the window or ``--send``) ↔ the agent, sans-I/O.

One JSON object per line, tagged by ``t``, typed and size-limited with msgspec (the peer is
another local process: its input is validated like any other). Calls carry a ``call`` number
that their reply repeats; :class:`Requests` is also pushed unasked to a caller that sent
:class:`Watch`, whenever one of its requests changes.

The same bytes travel inside :class:`protocol.desktop.HelpCall` / ``HelpReply`` between the
session helper and the root service (service mode), so both modes answer the same calls.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from protocol.requests import (
    MAX_DETAILS,
    MAX_DIAGNOSTICS,
    MAX_NOTE,
    MAX_SUMMARY,
    Diagnostic,
    FixAttempt,
    LocalId,
    Screenshot,
    Urgency,
)

#: A line: the largest is an open call with a 2 MiB screenshot (base64) plus text.
MAX_LINE = 4 * 1024 * 1024
MAX_FIXES = 64
MAX_REQUESTS = 64
MAX_PARAMS = 64
Call = Annotated[int, msgspec.Meta(ge=0, le=2**31)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_NOTE)]
Short = Annotated[str, msgspec.Meta(max_length=256)]
FixId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]*$")]
ParamName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ParamValue = bool | int | float | Annotated[str, msgspec.Meta(max_length=4096)]


class WireMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="t"):
    """Base of every local help message."""


# --- caller → agent ---------------------------------------------------------------------


class GetState(WireMessage, frozen=True, tag="state?"):
    call: Call


class Open(WireMessage, frozen=True, tag="open"):
    call: Call
    summary: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SUMMARY)]
    details: Annotated[str, msgspec.Meta(max_length=MAX_DETAILS)] = ""
    urgency: Urgency = "normal"
    screenshot: Screenshot | None = None
    attempt: FixAttempt | None = None


class Add(WireMessage, frozen=True, tag="add"):
    call: Call
    local_id: LocalId
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NOTE)]


class Withdraw(WireMessage, frozen=True, tag="withdraw"):
    call: Call
    local_id: LocalId


class RunFix(WireMessage, frozen=True, tag="fix.run"):
    call: Call
    fix_id: FixId
    params: Annotated[dict[ParamName, ParamValue], msgspec.Meta(max_length=MAX_PARAMS)] = {}


class Watch(WireMessage, frozen=True, tag="watch"):
    """From now on, push :class:`Requests` to this caller when one of its requests changes."""

    call: Call


# --- agent → caller ---------------------------------------------------------------------


class ParamView(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One parameter the user may set, within the fix's signed limits (shown as an input)."""

    name: ParamName
    type: Literal["int", "float", "str", "bool"]
    minimum: float | None = None
    maximum: float | None = None
    choices: Annotated[list[str | int | float], msgspec.Meta(max_length=64)] | None = None
    max_length: int | None = None
    required: bool = False


class FixView(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    fix_id: FixId
    title: Short
    action: Short
    params: Annotated[list[ParamView], msgspec.Meta(max_length=MAX_PARAMS)] = []
    #: "2 runs per 10 min" — what the user may still expect.
    budget: Short = ""


class RequestView(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A request of this user as the window shows it."""

    local_id: LocalId
    summary: Short
    urgency: Urgency
    #: "sending" until the server answered, then the server's state; "failed" when the server refused the open.
    state: Literal["sending", "waiting", "claimed", "resolved", "withdrawn", "failed"]
    number: int | None = None
    claimed_by: Short = ""
    note: Text = ""
    created_at: float = 0.0
    updated_at: float = 0.0


class State(WireMessage, frozen=True, tag="state"):
    call: Call
    user: Short
    diagnostics: Annotated[list[Diagnostic], msgspec.Meta(max_length=MAX_DIAGNOSTICS)] = []
    fixes: Annotated[list[FixView], msgspec.Meta(max_length=MAX_FIXES)] = []
    requests: Annotated[list[RequestView], msgspec.Meta(max_length=MAX_REQUESTS)] = []
    #: Whether the agent is connected to the server right now (requests are queued when it is not).
    online: bool = False


class Opened(WireMessage, frozen=True, tag="opened"):
    call: Call
    local_id: LocalId


class Done(WireMessage, frozen=True, tag="done"):
    call: Call


class Failed(WireMessage, frozen=True, tag="failed"):
    call: Call
    reason: Text


class FixDone(WireMessage, frozen=True, tag="fix.done"):
    call: Call
    fix_id: FixId
    title: Short
    ok: bool
    detail: Text = ""


class Requests(WireMessage, frozen=True, tag="requests"):
    """Pushed to watchers (``call`` 0): this user's requests as they stand now."""

    call: Call = 0
    requests: Annotated[list[RequestView], msgspec.Meta(max_length=MAX_REQUESTS)] = []


CallerMessage = GetState | Open | Add | Withdraw | RunFix | Watch
AgentMessage = State | Opened | Done | Failed | FixDone | Requests

_encoder = msgspec.json.Encoder()
_from_caller: msgspec.json.Decoder[CallerMessage] = msgspec.json.Decoder(CallerMessage)  # type: ignore[arg-type]
_from_agent: msgspec.json.Decoder[AgentMessage] = msgspec.json.Decoder(AgentMessage)  # type: ignore[arg-type]


class WireError(ValueError):
    """A line that is not a valid message for its receiver."""


def encode(message: WireMessage) -> bytes:
    """One line (newline-terminated)."""
    return _encoder.encode(message) + b"\n"


def decode_call(line: bytes) -> CallerMessage:
    try:
        return _from_caller.decode(line)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise WireError(str(exc)) from exc


def decode_reply(line: bytes) -> AgentMessage:
    try:
        return _from_agent.decode(line)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise WireError(str(exc)) from exc
