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
the technician's rights from the shared database itself; the request carries only the user id.
Whoever may publish on the bus is trusted like a node: give NATS credentials or mTLS in production.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

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
#: How long the holder of a device is waited for (the nodes are on one network).
ASK_TIMEOUT_S = 0.5
#: A routed session request: the holder records it and sends the offer (one database transaction).
ROUTE_TIMEOUT_S = 10.0
#: Largest routed request or answer accepted from the bus.
MAX_MESSAGE = 16 * 1024
_DEVICE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Holder(msgspec.Struct, frozen=True):
    node: str
    url: str


class RoutedSession(msgspec.Struct, frozen=True):
    """A session request forwarded to the device's node (body already checked on the first node)."""

    device_id: str
    user_id: str
    mode: Mode
    reason: str = ""
    document_id: str | None = None


#: Runs a routed request on this node; returns the session's JSON view (raises ApiError).
SessionStarter = Callable[[RoutedSession], Awaitable[dict[str, Any]]]


@dataclass
class Router:
    client: Client
    node: str
    url: str
    connections: ConnectionRegistry
    start_session: SessionStarter | None = None

    async def listen(self) -> list[Subscription]:
        return [await self.client.subscribe(HOLDER_PREFIX + "*", cb=self._on_holder_question),
                await self.client.subscribe(f"helpline.node.{self.node}.session", cb=self._on_session)]

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

    async def request_session(self, holder: Holder, routed: RoutedSession) -> dict[str, Any]:
        """Ask ``holder`` to start the session; its view plus ``node_url``, or the holder's ApiError."""
        try:
            msg = await self.client.request(f"helpline.node.{holder.node}.session", msgspec.json.encode(routed),
                                            timeout=ROUTE_TIMEOUT_S)
        except (TimeoutError, NatsError) as exc:
            raise ApiError(409, "device_offline",
                           f"the device's node {holder.node} did not answer: {type(exc).__name__}") from exc
        answer = json.loads(msg.data[:MAX_MESSAGE])
        if not isinstance(answer, dict):
            raise ApiError(502, "bad_gateway", "the device's node answered nonsense")
        if "error" in answer:
            error = answer["error"]
            raise ApiError(int(error.get("status", 409)), str(error.get("code", "routed")),
                           str(error.get("message", "")))
        view: dict[str, Any] = answer["session"]
        return view

    async def _on_holder_question(self, msg: Msg) -> None:
        device_id = msg.subject[len(HOLDER_PREFIX):]
        if msg.reply and self.connections.get(device_id) is not None:
            await msg.respond(msgspec.json.encode(Holder(self.node, self.url)))

    async def _on_session(self, msg: Msg) -> None:
        if not msg.reply:
            return
        answer: dict[str, Any]
        try:
            if len(msg.data) > MAX_MESSAGE or self.start_session is None:
                raise ApiError(409, "device_offline", "this node does not take routed sessions")
            routed = msgspec.json.decode(msg.data, type=RoutedSession)
            view = await self.start_session(routed)
            answer = {"session": {**view, "node_url": self.url, "node": self.node}}
        except ApiError as exc:
            answer = {"error": {"status": exc.status, "code": exc.code, "message": exc.message}}
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            answer = {"error": {"status": 400, "code": "bad_request", "message": str(exc)[:200]}}
        except Exception:
            log.exception("routed session request failed")
            answer = {"error": {"status": 500, "code": "internal", "message": "the device's node failed"}}
        await msg.respond(json.dumps(answer).encode())
