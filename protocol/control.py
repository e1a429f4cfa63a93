"""Sans-I/O state of one control channel (agent ↔ server).

Theory of operation
-------------------
The I/O layer feeds every text frame it reads to :meth:`ControlChannel.receive` and
writes out whatever :meth:`data_to_send` returns; it calls :meth:`tick` no later than
:meth:`next_deadline`. The channel answers pings, handles the hello/welcome handshake
state, turns peer garbage into ``error`` replies (never exceptions), and asks the I/O
layer to close (``close_request``) when the peer is silent too long or oversteps.
Application messages come out of :meth:`events_received`.

States::

    server: AWAIT_HELLO --hello(accepted)--> READY --close--> CLOSED
    agent:  AWAIT_WELCOME --welcome--> READY --close--> CLOSED

Rules for this file: no sockets, no asyncio, no clocks — time comes in as ``now``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from . import codec, limits
from .errors import LocalProtocolError, MessageTooLarge, RemoteProtocolError, UnexpectedMessage
from .messages import Error, Hello, Message, Ping, Pong, Role, Welcome


class CloseCode(enum.IntEnum):
    """Websocket close codes used by Helpline (4xxx are application codes)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY = 1008
    TOO_LARGE = 1009
    UNAUTHORIZED = 4401
    REVOKED = 4403
    TIMEOUT = 4408
    SUPERSEDED = 4409
    PROTOCOL = 4400


class ChannelState(enum.Enum):
    AWAIT_HELLO = "await_hello"
    AWAIT_WELCOME = "await_welcome"
    READY = "ready"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class CloseRequest:
    code: CloseCode
    reason: str


#: (state, message type allowed to arrive) → state after it. Messages not in the table
#: for the current state are "unexpected". READY accepts every app message (None key).
_TRANSITIONS: dict[tuple[ChannelState, str | None], ChannelState] = {
    (ChannelState.AWAIT_HELLO, "hello"): ChannelState.AWAIT_HELLO,  # app decides accept/reject
    (ChannelState.AWAIT_WELCOME, "welcome"): ChannelState.READY,
    (ChannelState.AWAIT_WELCOME, "error"): ChannelState.AWAIT_WELCOME,
    (ChannelState.READY, None): ChannelState.READY,
}

#: Consecutive peer errors tolerated before the channel is closed.
MAX_CONSECUTIVE_ERRORS = 20


#: The agent keeps an idle channel alive: it pings after ``keepalive_s`` without traffic (the welcome's figure, the
#: server's to choose). The server pings only as a backstop, after this many keepalives without traffic, so while
#: the agent keeps its schedule the server sends no pings of its own. (When both pinged on the same period,
#: whichever timer fired first pinged, and under load about half the periods carried two round trips — and
#: keepalives are most of what an idle node's CPU does.)
SERVER_PING_AFTER = 1.5
#: The agent's bounds on the welcome's keepalive: a server can neither make it spin nor leave a dead path unnoticed
#: for long (it closes after three keepalives of silence and reconnects, possibly to another node).
MIN_AGENT_KEEPALIVE_S = 5.0
MAX_AGENT_KEEPALIVE_S = 120.0


class ControlChannel:
    """Protocol state for one end of a control channel."""

    def __init__(
        self,
        role: Role,
        *,
        now: float,
        keepalive_s: float = 20.0,
        max_bytes: int = limits.MAX_CONTROL_MESSAGE_BYTES,
    ) -> None:
        self.role: Role = role
        self.state = ChannelState.AWAIT_HELLO if role == "server" else ChannelState.AWAIT_WELCOME
        self.keepalive_s = keepalive_s
        #: Idle this long → ping (the server's backstop is later than the agent's schedule).
        self._ping_after = keepalive_s * (SERVER_PING_AFTER if role == "server" else 1.0)
        self.max_bytes = max_bytes
        self.close_request: CloseRequest | None = None
        self.peer_hello: Hello | None = None
        self.welcome: Welcome | None = None
        self.errors_received = 0
        self._consecutive_errors = 0
        self._last_received = now
        self._last_sent = now
        self._ping_outstanding: str | None = None
        self._events: list[Message] = []
        self._outgoing: list[str] = []

    # --- outputs ----------------------------------------------------------------------------

    def events_received(self) -> list[Message]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[str]:
        out, self._outgoing = self._outgoing, []
        return out

    def next_deadline(self) -> float:
        """When :meth:`tick` must run next: the next ping, or the silence limit."""
        if self._ping_outstanding is None:
            return min(min(self._last_sent, self._last_received) + self._ping_after,
                       self._last_received + 3 * self.keepalive_s)
        return self._last_received + 3 * self.keepalive_s

    # --- inputs -----------------------------------------------------------------------------

    def receive(self, data: str | bytes, now: float) -> None:
        """Feed one text frame from the peer."""
        if self.state is ChannelState.CLOSED:
            return
        self._last_received = now
        try:
            message = codec.decode(data, max_bytes=self.max_bytes)
            self._check_allowed(message)
        except MessageTooLarge as exc:
            self._fail(CloseCode.TOO_LARGE, exc.message)
            return
        except RemoteProtocolError as exc:
            self._reply_error(exc, now)
            return
        self._consecutive_errors = 0
        self._dispatch(message, now)

    def tick(self, now: float) -> None:
        """Send a keepalive ping when idle; close when the peer has gone silent."""
        if self.state is ChannelState.CLOSED:
            return
        if now - self._last_received >= 3 * self.keepalive_s:
            self._fail(CloseCode.TIMEOUT, f"no message from peer for {now - self._last_received:.0f}s")
            return
        idle_since = min(self._last_sent, self._last_received)
        if self._ping_outstanding is None and now - idle_since >= self._ping_after:
            ping = Ping()
            self._ping_outstanding = ping.id
            self._queue(ping, now)

    def send(self, message: Message, now: float) -> None:
        """Queue an application message (or the handshake message this role owns)."""
        if self.state is ChannelState.CLOSED:
            raise LocalProtocolError("channel is closed")
        if message.sender not in ("both", self.role):
            raise LocalProtocolError(f"{self.role} may not send {message.type_name()}")
        if self.state is not ChannelState.READY and not isinstance(message, (Hello, Welcome, Error)):
            raise LocalProtocolError(f"cannot send {message.type_name()} before the handshake")
        if isinstance(message, Welcome):
            self.state = ChannelState.READY
            self.welcome = message
        self._queue(message, now)

    def reject(self, code: CloseCode, reason: str, now: float) -> None:
        """Refuse the peer (bad hello, revoked …): send an error, then close."""
        self._queue(Error(code=code.name.lower(), message=reason), now)
        self.close(code, reason)

    def close(self, code: CloseCode, reason: str) -> None:
        if self.close_request is None:
            self.close_request = CloseRequest(code, reason)
        self.state = ChannelState.CLOSED

    # --- internals --------------------------------------------------------------------------

    def _check_allowed(self, message: Message) -> None:
        name = message.type_name()
        if message.sender not in ("both", "server" if self.role == "agent" else "agent"):
            raise UnexpectedMessage(f"{name} may not be sent by the {self._peer}", in_reply_to=message.id)
        if (self.state, name) in _TRANSITIONS:
            return
        if self.state is ChannelState.READY and not isinstance(message, (Hello, Welcome)):
            return
        raise UnexpectedMessage(f"{name} not allowed in state {self.state.value}", in_reply_to=message.id)

    @property
    def _peer(self) -> str:
        return "server" if self.role == "agent" else "agent"

    def _dispatch(self, message: Message, now: float) -> None:
        if isinstance(message, Ping):
            self._queue(Pong(in_reply_to=message.id), now)
            return
        if isinstance(message, Pong):
            if message.in_reply_to == self._ping_outstanding:
                self._ping_outstanding = None
            return
        if isinstance(message, Hello):
            self.peer_hello = message
        elif isinstance(message, Welcome):
            self.welcome = message
            self.keepalive_s = self._ping_after = min(MAX_AGENT_KEEPALIVE_S,
                                                      max(MIN_AGENT_KEEPALIVE_S, message.keepalive_s))
        self.state = _TRANSITIONS.get((self.state, message.type_name()), self.state)
        self._events.append(message)

    def _reply_error(self, exc: RemoteProtocolError, now: float) -> None:
        self.errors_received += 1
        self._consecutive_errors += 1
        self._queue(Error(code=exc.code, message=exc.message[:2000], in_reply_to=exc.in_reply_to), now)
        if self.state is not ChannelState.READY:
            self.close(CloseCode.PROTOCOL, exc.message[:120])
        elif self._consecutive_errors > MAX_CONSECUTIVE_ERRORS:
            self.close(CloseCode.POLICY, "too many invalid messages")

    def _fail(self, code: CloseCode, reason: str) -> None:
        self.close(code, reason)

    def _queue(self, message: Message, now: float) -> None:
        self._outgoing.append(codec.encode(message))
        self._last_sent = now
