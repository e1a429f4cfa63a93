"""Remote-session lifecycle: messages and a sans-I/O state machine.

Theory of operation
-------------------
Both ends keep one :class:`SessionMachine` per session. The server creates it when a
technician asks (``REQUESTED``), sends ``session.offer`` (``OFFERED``); the agent answers
with ``session.answer`` after the device user (or a verified grant) decided
(``CONSENTED``, ``DENIED`` or ``TIMED_OUT``); the agent then opens the tunnel and the relay
pairs it (``STREAMING``); either side ends it with ``session.end`` (``ENDED``, with a
reason). ``session.mode`` asks to upgrade view → control while streaming; it needs a new
consent, and until that arrives the session stays in its consented mode.

All transitions live in :data:`TRANSITIONS`; anything not listed is refused with
:class:`~protocol.errors.LocalProtocolError` (our bug) — the I/O layers turn a peer's
out-of-order message into an ``unexpected`` error instead of calling the machine.

Rules for this file: no sockets, no asyncio, no clocks — time comes in as ``now``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

import msgspec

from .errors import LocalProtocolError
from .messages import Id, Message, ShortStr

Mode = Literal["view", "control"]
AnsweredBy = Literal["user", "grant", "policy", "timeout", "unavailable"]
EndedBy = Literal["technician", "user", "agent", "server"]

#: How long the device user has to answer the consent prompt (the agent's policy may shorten it).
CONSENT_TIMEOUT_S = 30.0
#: A tunnel token is single-use and must be presented within this many seconds of the offer
#: *answer*; the server also refuses it once the session has left CONSENTED.
TUNNEL_TOKEN_LIFE_S = 60.0
#: The header that carries the tunnel token on the agent's tunnel websocket.
TUNNEL_TOKEN_HEADER = "X-Helpline-Tunnel-Token"  # noqa: S105 - a header name

Token = Annotated[str, msgspec.Meta(min_length=32, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


class EndReason(enum.Enum):
    """Why a session ended (always recorded and audited)."""

    TECHNICIAN = "technician ended the session"
    USER = "device user ended the session"
    DENIED = "device user denied"
    TIMED_OUT = "no answer to the consent prompt"
    POLICY = "refused by the device's local policy"
    GRANT_REFUSED = "grant refused by the agent"
    GRANT_REVOKED = "grant revoked"
    GRANT_EXPIRED = "grant expired"
    GRANT_WINDOW = "grant window ended"
    TUNNEL_CLOSED = "tunnel closed"
    TECHNICIAN_GONE = "technician disconnected"
    AGENT_GONE = "agent disconnected"
    IDLE = "idle timeout"
    SERVER = "ended by the server"
    ERROR = "error"


# --- messages ------------------------------------------------------------------------------


class SessionOffer(Message, frozen=True, tag="session.offer"):
    """Server → agent: a technician asks to view or control this device."""

    sender: ClassVar[str] = "server"
    session_id: Id
    technician: ShortStr
    technician_user: ShortStr
    technician_role: ShortStr
    mode: Mode
    tunnel_token: Token
    reason: ShortStr = ""
    #: Unattended: the approver-signed grant document it runs under; the agent answers with a
    #: ``session.challenge`` the technician must sign (protocol/authority_messages.py).
    document_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,64}$")] | None = None
    #: Every viewer of this session rebuilds libjpeg's standard tables: send JPEGs as ``JPEG_LEAN``
    #: (protocol/jpeg_tables.py). Only sent to agents with the "stream.jpeg-lean" capability and omitted
    #: from the wire otherwise, so agents without it still decode the offer.
    jpeg_lean: bool | msgspec.UnsetType = msgspec.UNSET
    #: Every viewer of this session reads batched updates (protocol/stream.py): send each update's records
    #: together. Only sent to agents with the "stream.batched" capability, omitted otherwise.
    batched: bool | msgspec.UnsetType = msgspec.UNSET


class SessionAnswer(Message, frozen=True, tag="session.answer"):
    """Agent → server: the decision (by the user, a verified grant, the local policy or the clock)."""

    sender: ClassVar[str] = "agent"
    session_id: Id
    accepted: bool
    by: AnsweredBy
    mode_granted: Mode | None = None
    reason: ShortStr = ""
    #: The user ticked "my helpdesk may bring colleagues" on the first prompt: joins need no new question.
    colleagues: bool = False


class SessionEnd(Message, frozen=True, tag="session.end"):
    """Either side: the session is over. The agent reports its input refusals with it."""

    session_id: Id
    reason: ShortStr
    by: EndedBy
    refused_inputs: Annotated[int, msgspec.Meta(ge=0)] = 0
    bytes_sent: Annotated[int, msgspec.Meta(ge=0)] = 0


class SessionMode(Message, frozen=True, tag="session.mode"):
    """Server → agent: upgrade the running session's mode; the agent asks for consent again."""

    sender: ClassVar[str] = "server"
    session_id: Id
    mode: Mode
    reason: ShortStr = ""


# --- join and hand-off (several technicians in one session) -------------------------------

#: Most technicians in one session (the controller included).
MAX_PEOPLE = 8
People = Annotated[list[ShortStr], msgspec.Meta(max_length=MAX_PEOPLE)]


class SessionJoin(Message, frozen=True, tag="session.join"):
    """Server → agent: another technician asks to watch the running session (view only)."""

    sender: ClassVar[str] = "server"
    session_id: Id
    technician: ShortStr
    technician_role: ShortStr
    #: Who invited them (the session's controlling technician).
    invited_by: ShortStr
    reason: ShortStr = ""


class SessionJoinAnswer(Message, frozen=True, tag="session.join_answer"):
    """Agent → server: may the joiner watch (the user's answer, the first prompt's "colleagues", a grant)."""

    sender: ClassVar[str] = "agent"
    session_id: Id
    technician: ShortStr
    accepted: bool
    by: AnsweredBy
    reason: ShortStr = ""


class SessionPeople(Message, frozen=True, tag="session.people"):
    """Server → agent: who is in the session now and who controls (None: nobody, view only for all)."""

    sender: ClassVar[str] = "server"
    session_id: Id
    viewers: People
    controller: ShortStr | None = None


class SessionPeopleApplied(Message, frozen=True, tag="session.people_applied"):
    """Agent → server: the roster of a ``session.people`` is in force (or refused: someone not admitted)."""

    sender: ClassVar[str] = "agent"
    session_id: Id
    accepted: bool
    controller: ShortStr | None = None
    reason: ShortStr = ""


#: In the tunnel, relay → agent: the next technician messages come from this viewer (sent when it changes).
VIEWER_MARK_TYPE = "viewer.from"


def viewer_mark(name: str) -> str:
    """The tunnel text that says whose messages follow."""
    return msgspec.json.encode({"type": VIEWER_MARK_TYPE, "name": name}).decode()


def parse_viewer_mark(text: str) -> str | None:
    """The viewer a mark names, or None when ``text`` is not a mark (never raises on peer input)."""
    if not text.startswith('{"type":"viewer.from"') or len(text) > 512:
        return None
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    name = value.get("name") if isinstance(value, dict) else None
    return name if isinstance(name, str) and name else None


# --- state machine -------------------------------------------------------------------------


class SessionState(enum.Enum):
    REQUESTED = "requested"
    OFFERED = "offered"
    CONSENTED = "consented"
    DENIED = "denied"
    TIMED_OUT = "timed_out"
    STREAMING = "streaming"
    ENDED = "ended"


class Event(enum.Enum):
    OFFER = "offer"
    CONSENT = "consent"
    DENY = "deny"
    TIMEOUT = "timeout"
    START = "start"
    MODE = "mode"
    END = "end"


S, E = SessionState, Event

#: (state, event) → next state. Everything else is refused.
TRANSITIONS: dict[tuple[SessionState, Event], SessionState] = {
    (S.REQUESTED, E.OFFER): S.OFFERED,
    (S.OFFERED, E.CONSENT): S.CONSENTED,
    (S.OFFERED, E.DENY): S.DENIED,
    (S.OFFERED, E.TIMEOUT): S.TIMED_OUT,
    (S.CONSENTED, E.START): S.STREAMING,
    (S.STREAMING, E.MODE): S.STREAMING,
    (S.REQUESTED, E.END): S.ENDED,
    (S.OFFERED, E.END): S.ENDED,
    (S.CONSENTED, E.END): S.ENDED,
    (S.STREAMING, E.END): S.ENDED,
    # A denied or unanswered offer is closed with a recorded end as well.
    (S.DENIED, E.END): S.ENDED,
    (S.TIMED_OUT, E.END): S.ENDED,
}

FINAL_STATES = frozenset({S.ENDED})
#: States in which a session still holds resources (prompt, token, tunnel).
LIVE_STATES = frozenset({S.REQUESTED, S.OFFERED, S.CONSENTED, S.STREAMING})


@dataclass
class SessionMachine:
    """One session's state, mode and deadlines, driven by explicit events."""

    session_id: str
    requested_mode: Mode
    created_at: float
    consent_timeout_s: float = CONSENT_TIMEOUT_S
    token_life_s: float = TUNNEL_TOKEN_LIFE_S
    state: SessionState = SessionState.REQUESTED
    mode: Mode | None = None
    pending_mode: Mode | None = None
    end_reason: str = ""
    ended_by: str = ""
    answered_by: str = ""
    history: list[tuple[float, SessionState]] = field(default_factory=list)
    _deadline: float | None = None

    def _go(self, event: Event, now: float) -> None:
        target = TRANSITIONS.get((self.state, event))
        if target is None:
            raise LocalProtocolError(f"session {self.session_id}: cannot {event.value} in state {self.state.value}")
        self.state = target
        self.history.append((now, target))

    def can(self, event: Event) -> bool:
        return (self.state, event) in TRANSITIONS

    # --- verbs --------------------------------------------------------------------------

    def offer(self, now: float) -> None:
        self._go(E.OFFER, now)
        # A little slack over the prompt timeout for the round trip.
        self._deadline = now + self.consent_timeout_s + 5.0

    def answer(self, *, accepted: bool, mode_granted: Mode | None, by: str, now: float) -> None:
        """Apply the agent's answer. Control is never granted when view was requested."""
        if accepted:
            if mode_granted is None:
                raise LocalProtocolError("an accepted session needs mode_granted")
            if mode_granted == "control" and self.requested_mode == "view":
                raise LocalProtocolError("control cannot be granted when only view was requested")
            self._go(E.CONSENT, now)
            self.mode = mode_granted
            self._deadline = now + self.token_life_s
        else:
            self._go(E.TIMEOUT if by == "timeout" else E.DENY, now)
            self._deadline = None
        self.answered_by = by

    def start(self, now: float) -> None:
        self._go(E.START, now)
        self._deadline = None

    def request_mode(self, mode: Mode, now: float) -> None:
        """The technician asks for another mode; it takes effect only after :meth:`mode_consented`."""
        self._go(E.MODE, now)
        if mode == self.mode:
            self.pending_mode = None
            return
        self.pending_mode = mode

    def mode_consented(self, mode: Mode, now: float) -> None:
        if self.pending_mode != mode:
            raise LocalProtocolError(f"mode {mode} was not requested")
        self._go(E.MODE, now)
        self.mode, self.pending_mode = mode, None

    def mode_refused(self, now: float) -> None:
        self._go(E.MODE, now)
        self.pending_mode = None

    def end(self, reason: str, by: str, now: float) -> bool:
        """End the session; False (and no change) when it had already ended."""
        if self.state in FINAL_STATES:
            return False
        self._go(E.END, now)
        self.end_reason, self.ended_by = reason, by
        self._deadline = None
        return True

    # --- time ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must run: the answer deadline (OFFERED) or the tunnel deadline (CONSENTED)."""
        return self._deadline

    def tick(self, now: float) -> bool:
        """Apply an expired deadline; True when the state changed."""
        if self._deadline is None or now < self._deadline:
            return False
        if self.state is S.OFFERED:
            self._go(E.TIMEOUT, now)
            self.answered_by = "timeout"
            self._deadline = None
            return True
        if self.state is S.CONSENTED:
            return self.end("the agent did not open the tunnel in time", "server", now)
        self._deadline = None
        return False

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES
