"""Which node holds a device, and session requests routed to it.

Presence on the bus is a question, not a table: ``helpline.holder.<device_id>`` is answered only
by the node holding that device's control channel (its :class:`~server.connections.ConnectionRegistry`
is the truth; a row in a shared table or KV could outlive a node that died). A node that is gone
answers nothing, so the asker times out after :data:`ASK_TIMEOUT_S` and says the device is not
connected anywhere.

A session requested on node A for a device held by node C is requested *on C*
(``helpline.node.<C>.session``): C records it, offers it to the agent and holds the live session;
the answer names C's console URL, where the technician's viewer opens the stream (both tunnel ends
meet on C; A carries no session bytes, so it adds no latency and A's loss does not end it). C loads
the technician's rights from the shared database itself and re-checks the login the request was made under
(the user id plus the cookie session or API token: revoked, expired or another user's, refused and audited).
Calls on a running session (end, mode, people, proof …) made on another node are forwarded the same way
(``helpline.node.<C>.call``) to the node holding it, found by ``helpline.live.<session_id>`` (answered
only by that node): C re-reads the caller's rights, re-checks the login the call was made under (the
caller's cookie session or API token: revoked or expired, refused) and runs the call
(server/sessions/calls.py).
Whoever may publish on the bus is trusted like a node: give NATS credentials or mTLS in production.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from protocol.session import Mode
from server.connections import ConnectionRegistry
from server.errors import ApiError

log = logging.getLogger(__name__)

HOLDER_PREFIX = "helpline.holder."
LIVE_PREFIX = "helpline.live."
#: How long the holder of a device is waited for (the nodes are on one network).
ASK_TIMEOUT_S = 0.5
#: A routed session request: the holder records it and sends the offer (one database transaction).
ROUTE_TIMEOUT_S = 10.0
#: A forwarded call on a running session: a join waits for the device user's answer (30 s prompt + 10 s).
CALL_TIMEOUT_S = 90.0
#: Largest routed request or answer accepted from the bus (a people list names up to 200 technicians).
MAX_MESSAGE = 64 * 1024
#: Routed requests answered at once (each may wait :data:`CALL_TIMEOUT_S` for a device user); past it the
#: asker is told ``busy`` at once instead of piling up tasks.
MAX_ANSWERING = 64
_DEVICE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Holder(msgspec.Struct, frozen=True):
    node: str
    url: str


class RoutedSession(msgspec.Struct, frozen=True):
    """A session request forwarded to the device's node (body already checked on the first node)."""

    device_id: str
    user_id: str
    mode: Mode
    reason: Annotated[str, msgspec.Meta(max_length=256)] = ""
    document_id: str | None = None
    #: "support": a support-code client (server/support_codes) rather than an enrolled device.
    kind: Literal["device", "support"] = "device"
    #: The caller's cookie session, or the API token they used (``t_…``), on the first node: the holder re-checks
    #: it as it does for a :class:`NodeCall` (a request naming neither, from an older node, is refused).
    login_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    token_id: Annotated[str, msgspec.Meta(pattern=r"^t_[0-9a-f]{1,64}$")] | None = None
    #: The node that routed the request (for the holder's audit record).
    node: Annotated[str, msgspec.Meta(max_length=64)] = ""


class NodeCall(msgspec.Struct, frozen=True):
    """A call on a running session, forwarded to the node it is live on (its route checked on the first)."""

    action: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{1,16}$")]
    session_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
    user_id: Annotated[str, msgspec.Meta(max_length=128)]
    #: The caller's cookie session (None for an API token caller).
    login_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    body: dict[str, Any] | None = None
    #: The API token the caller used on the first node (``t_…``): the holder re-checks it (revoked or expired:
    #: refused) and names it in its audit record. Added after the first release of calls; a call with neither
    #: this nor ``login_id`` (an older node's token caller) is refused.
    token_id: Annotated[str, msgspec.Meta(pattern=r"^t_[0-9a-f]{1,64}$")] | None = None
    #: The node that forwarded the call (for the holder's audit record).
    node: Annotated[str, msgspec.Meta(max_length=64)] = ""


#: Runs a routed request on this node; returns the session's JSON view (raises ApiError).
SessionStarter = Callable[[RoutedSession], Awaitable[dict[str, Any]]]
#: Runs a forwarded call on this node; returns (HTTP status, JSON body) (raises ApiError).
CallRunner = Callable[[NodeCall], Awaitable[tuple[int, dict[str, Any]]]]


@dataclass
class Router:
    client: Client
    node: str
    url: str
    connections: ConnectionRegistry
    start_session: SessionStarter | None = None
    #: Whether a session is live on this node (its relay pairs the tunnel there).
    has_live: Callable[[str], bool] | None = None
    run_call: CallRunner | None = None
    _answering: set[asyncio.Task[None]] = field(default_factory=set)
    _closing: bool = False

    async def listen(self) -> list[Subscription]:
        """Subscribe to the questions and calls for this node; on return nats-server has the subscriptions (a
        flush's round trip), so a request sent from another connection after it reaches them instead of
        finding no responders."""
        subscriptions = [await self.client.subscribe(HOLDER_PREFIX + "*", cb=self._on_holder_question),
                         await self.client.subscribe(LIVE_PREFIX + "*", cb=self._on_live_question),
                         await self.client.subscribe(f"helpline.node.{self.node}.session", cb=self._on_session),
                         await self.client.subscribe(f"helpline.node.{self.node}.call", cb=self._on_call)]
        await self.client.flush()
        return subscriptions

    async def holder(self, device_id: str) -> Holder | None:
        """The node holding the device's channel (None: no node answered in time)."""
        if not _DEVICE_ID.match(device_id):
            return None
        if self.connections.get(device_id) is not None:
            return Holder(self.node, self.url)
        try:
            msg = await self.client.request(HOLDER_PREFIX + device_id, b"", timeout=ASK_TIMEOUT_S)
            return msgspec.json.decode(msg.data[:MAX_MESSAGE], type=Holder)
        except (TimeoutError, NatsError, msgspec.ValidationError, msgspec.DecodeError):
            return None

    async def live_holder(self, session_id: str) -> Holder | None:
        """The node a session is live on (None: no node answered in time)."""
        if not _DEVICE_ID.match(session_id):
            return None
        if self.has_live is not None and self.has_live(session_id):
            return Holder(self.node, self.url)
        try:
            msg = await self.client.request(LIVE_PREFIX + session_id, b"", timeout=ASK_TIMEOUT_S)
            return msgspec.json.decode(msg.data[:MAX_MESSAGE], type=Holder)
        except (TimeoutError, NatsError, msgspec.ValidationError, msgspec.DecodeError):
            return None

    async def request_session(self, holder: Holder, routed: RoutedSession) -> dict[str, Any]:
        """Ask ``holder`` to start the session; its view plus ``node_url``, or the holder's ApiError."""
        answer = await self._ask(holder, "session", msgspec.json.encode(routed), ROUTE_TIMEOUT_S, "device_offline")
        view: dict[str, Any] = answer["session"]
        return view

    async def call(self, holder: Holder, call: NodeCall) -> tuple[int, dict[str, Any]]:
        """Run ``call`` on ``holder``: its (status, body), or the holder's ApiError."""
        answer = await self._ask(holder, "call", msgspec.json.encode(call), CALL_TIMEOUT_S, "not_live")
        return int(answer["status"]), dict(answer["body"])

    async def _ask(self, holder: Holder, what: str, payload: bytes, timeout: float, unanswered: str) -> dict[str, Any]:
        try:
            msg = await self.client.request(f"helpline.node.{holder.node}.{what}", payload, timeout=timeout)
        except (TimeoutError, NatsError) as exc:
            raise ApiError(409, unanswered, f"the node {holder.node} did not answer: {type(exc).__name__}") from exc
        try:
            answer = json.loads(msg.data[:MAX_MESSAGE])
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ApiError(502, "bad_gateway", f"the node {holder.node} answered nonsense")
        if "error" in answer:
            error = answer["error"]
            raise ApiError(int(error.get("status", 409)), str(error.get("code", "routed")),
                           str(error.get("message", "")))
        return answer

    async def _on_holder_question(self, msg: Msg) -> None:
        device_id = msg.subject[len(HOLDER_PREFIX):]
        if msg.reply and self.connections.get(device_id) is not None:
            await msg.respond(msgspec.json.encode(Holder(self.node, self.url)))

    async def _on_live_question(self, msg: Msg) -> None:
        session_id = msg.subject[len(LIVE_PREFIX):]
        if msg.reply and self.has_live is not None and self.has_live(session_id):
            await msg.respond(msgspec.json.encode(Holder(self.node, self.url)))

    async def _on_session(self, msg: Msg) -> None:
        async def start() -> dict[str, Any]:
            if self.start_session is None:
                raise ApiError(409, "device_offline", "this node does not take routed sessions")
            view = await self.start_session(msgspec.json.decode(msg.data, type=RoutedSession))
            return {"session": {**view, "node_url": self.url, "node": self.node}}

        await self._spawn(msg, start)

    async def _on_call(self, msg: Msg) -> None:
        async def run() -> dict[str, Any]:
            if self.run_call is None:
                raise ApiError(409, "not_live", "this node does not take forwarded calls")
            status, body = await self.run_call(msgspec.json.decode(msg.data, type=NodeCall))
            return {"status": status, "body": {**body, "node_url": self.url, "node": self.node}}

        await self._spawn(msg, run)

    @property
    def answering(self) -> int:
        """Routed requests being answered now."""
        return len(self._answering)

    async def _spawn(self, msg: Msg, produce: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """Each routed request answered in its own task (NATS runs one subscription's callbacks one at a time,
        and a join waits for the device user's answer), at most :data:`MAX_ANSWERING` at once."""
        if self._closing or len(self._answering) >= MAX_ANSWERING:
            async def busy() -> dict[str, Any]:
                raise ApiError(503, "busy", f"the node {self.node} is answering too many requests; try again")

            await self._respond(msg, busy)
            return
        task = asyncio.create_task(self._respond(msg, produce))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def close(self) -> None:
        """Cancel the requests still being answered and wait for them: none may outlive the node's database."""
        self._closing = True
        tasks = list(self._answering)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _respond(self, msg: Msg, produce: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """Answer a routed request with what ``produce`` returns, or the error it raised."""
        if not msg.reply:
            return
        answer: dict[str, Any]
        try:
            if len(msg.data) > MAX_MESSAGE:
                raise ApiError(413, "too_large", "routed request too large")
            answer = await produce()
        except ApiError as exc:
            answer = {"error": {"status": exc.status, "code": exc.code, "message": exc.message}}
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            answer = {"error": {"status": 400, "code": "bad_request", "message": str(exc)[:200]}}
        except Exception:
            log.exception("routed request failed", extra={"subject": msg.subject})
            answer = {"error": {"status": 500, "code": "internal", "message": "the device's node failed"}}
        await msg.respond(json.dumps(answer).encode())
