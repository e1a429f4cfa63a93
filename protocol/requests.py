"""Support requests from the device (issue 18): the messages (sans-I/O).

The person at the device asks for help with ``request.open``; the agent names it with its own
``local_id`` (uuid4 hex), which is the idempotency key: an agent that resends after a lost
connection gets the same request back, never a second one. ``request.add`` adds text to it (a
resolved request reopens when added to within 7 days, the server decides), ``request.withdraw``
takes it back; both are acknowledged with ``request.ack`` naming their message id (resent until then,
applied once). The server answers every change — and, on each connection, every open request of
the device — with ``request.status``, so the device shows where its request stands after a restart.

Self-service fixes run on the device alone (approved documents); their outcome is reported with
``fix.outcome`` and audited by the server as ``fix.run``. A fix that did not help travels as the
``attempt`` of a ``request.open``.

Everything here comes from a device and is hostile input: every string, list and the screenshot
have limits, checked when the message is decoded.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec

from .messages import Id, Message, ShortStr

#: The screenshot a user chose to send (PNG bytes, base64 on the wire: 2.7 MiB of the 4 MiB frame).
MAX_SCREENSHOT_BYTES = 2 * 1024 * 1024
MAX_SUMMARY = 200
MAX_DETAILS = 4000
MAX_DIAGNOSTICS = 32
#: Text added to a request, a fix's detail, a status note.
MAX_NOTE = 4000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: A self-service fix's script: fetched by the device over mTLS from this agent-listener path + its signed
#: SHA-256, at most this many bytes (the server refuses larger uploads; the agent stops reading past it).
FIX_SCRIPT_PREFIX = "/agent/fix-scripts/"
MAX_FIX_SCRIPT_BYTES = 1024 * 1024

Urgency = Literal["low", "normal", "high", "critical"]
URGENCIES: tuple[str, ...] = ("low", "normal", "high", "critical")
RequestState = Literal["waiting", "claimed", "resolved", "withdrawn"]
#: States in which a request is still open (the device is told about them on connect).
OPEN_STATES: frozenset[str] = frozenset({"waiting", "claimed"})
#: Open requests one device may hold (the server refuses more with ``too_many``; the agent keeps within it).
MAX_OPEN_PER_DEVICE = 20
FixResult = Literal["failed", "didnt_help", "ok"]

LocalId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]
Summary = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SUMMARY)]
Details = Annotated[str, msgspec.Meta(max_length=MAX_DETAILS)]
NoteText = Annotated[str, msgspec.Meta(max_length=MAX_NOTE)]
Screenshot = Annotated[bytes, msgspec.Meta(min_length=len(PNG_MAGIC), max_length=MAX_SCREENSHOT_BYTES)]
#: Diagnostic codes and severities are machine words ("disk_full", "warning").
Word = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class Diagnostic(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One thing the agent already knows about the device (disk nearly full, no network …)."""

    code: Word
    severity: Word
    text: ShortStr


class FixAttempt(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A self-service fix the user ran before asking (``didnt_help``/``failed`` escalate)."""

    fix_id: Id
    title: ShortStr
    outcome: FixResult
    detail: NoteText = ""


class RequestOpen(Message, frozen=True, tag="request.open"):
    """Agent → server: the user asks for help."""

    sender: ClassVar[str] = "agent"
    local_id: LocalId
    summary: Summary
    details: Details = ""
    urgency: Urgency = "normal"
    #: The OS user at the device who asked.
    requester: ShortStr = ""
    #: PNG the user saw before sending; ``None`` when they chose not to attach one.
    screenshot: Screenshot | None = None
    diagnostics: Annotated[list[Diagnostic], msgspec.Meta(max_length=MAX_DIAGNOSTICS)] = []
    attempt: FixAttempt | None = None


class RequestAdd(Message, frozen=True, tag="request.add"):
    """Agent → server: the user adds to their request (reopens a recently resolved one)."""

    sender: ClassVar[str] = "agent"
    local_id: LocalId
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NOTE)]


class RequestWithdraw(Message, frozen=True, tag="request.withdraw"):
    """Agent → server: the user no longer needs help."""

    sender: ClassVar[str] = "agent"
    local_id: LocalId


class RequestStatus(Message, frozen=True, tag="request.status"):
    """Server → agent: where a request stands (sent on every change and on connect)."""

    sender: ClassVar[str] = "server"
    local_id: LocalId
    request_id: Id
    number: Annotated[int, msgspec.Meta(ge=1)]
    state: RequestState
    #: Display name of the technician who claimed it ("" = nobody).
    claimed_by: ShortStr = ""
    updated_at: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    #: The last text meant for the user (a technician's note), may be "".
    note: NoteText = ""


#: The hello capability of agents that take :class:`RequestAck` (older agents refuse unknown types: never sent to them).
ACK_CAPABILITY = "request.ack"


class RequestAck(Message, frozen=True, tag="request.ack"):
    """Server → agent: the ``request.add``/``request.withdraw`` with this message id was handled — applied now,
    applied before (a resend: the server applies each message id once), or refused for good (``applied`` false).

    The agent keeps a note or withdrawal in its outbox, and resends it on every connection, until this arrives:
    one sent as the connection dropped is delivered once, never lost and never doubled.
    """

    sender: ClassVar[str] = "server"
    local_id: LocalId
    message_id: Id
    applied: bool = True


class FixOutcome(Message, frozen=True, tag="fix.outcome"):
    """Agent → server: a self-service fix ran on the device (audited as ``fix.run``)."""

    sender: ClassVar[str] = "agent"
    fix_id: Id
    title: ShortStr
    ok: bool
    detail: NoteText = ""


def fix_script_path(sha256: str) -> str:
    """The agent-listener path of the fix script with this SHA-256."""
    return f"{FIX_SCRIPT_PREFIX}{sha256}"


def is_png(data: bytes) -> bool:
    return data.startswith(PNG_MAGIC)
