"""The bus of one node, composed: connection, event rings, holder answers, routed sessions and calls.

:func:`attach` is called by :meth:`server.app.HelplineServer.start` when ``nats_url`` is set, after
the database is open and before the listeners start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from protocol.session import Mode
from server.auth.rights import Principal, Right
from server.errors import ApiError

from . import events
from .connection import connect, node_name
from .nodes import NodeDirectory
from .routing import Holder, NodeCall, RoutedSession, Router

if TYPE_CHECKING:
    from server.app import HelplineServer
    from server.sessions.calls import Call
    from server.sessions.driver import SessionDriver

log = logging.getLogger(__name__)


@dataclass
class NodeBus:
    client: Client
    router: Router
    nodes: NodeDirectory
    subscriptions: list[Subscription] = field(default_factory=list)

    @property
    def node(self) -> str:
        return self.router.node

    async def holder(self, device_id: str) -> Holder | None:
        return await self.router.holder(device_id)

    async def close(self) -> None:
        """Stop taking requests, end those still being answered (before the database closes), then drain."""
        for sub in self.subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await self.router.close()
        with contextlib.suppress(Exception):
            await self.client.drain()
        # drain() refuses a client that is reconnecting (the bus is down): close it anyway, or its reconnect
        # loop runs on after the node stopped.
        if not self.client.is_closed:
            with contextlib.suppress(Exception):
                await self.client.close()


async def attach(server: HelplineServer) -> NodeBus | None:
    """Connect the node to the bus (None without ``nats_url``); wraps ``server.db`` to ring on commit."""
    client = await connect(server.config)
    if client is None:
        return None
    assert server.watcher is not None, "the watcher is made before the bus is attached"
    server.db = events.RingingDatabase(server.db, client)  # type: ignore[assignment]
    url = server.config.node_url or server.console_url
    from server.sessions import SESSIONS

    live = server.console_app[SESSIONS].live
    router = Router(client, node_name(server.config), url, server.connections, _starter(server),
                    has_live=lambda session_id: session_id in live, run_call=_runner(server))
    bus = NodeBus(client, router, NodeDirectory(lambda: server.db, router.node, url))
    await bus.nodes.register()  # known to the other nodes (stream tickets' origins) before it serves anyone
    await bus.nodes.refresh()
    bus.subscriptions.append(await bus.nodes.listen(client))
    server.background.append(bus.nodes.run)
    bus.subscriptions.append(await events.listen(client, server.watcher))
    bus.subscriptions.extend(await router.listen())
    log.info("node on the bus", extra={"node": router.node, "node_url": url})
    return bus


def _starter(server: HelplineServer) -> Any:
    """Start a session routed from another node, with the technician's rights and login (the cookie session or
    API token the first node checked) read here: a login ended in between is refused and audited."""
    from server import audit, devices
    from server.accounts import users
    from server.sessions import SESSIONS, calls, views
    from server.support_codes import repository as support_clients

    async def start(routed: RoutedSession) -> dict[str, Any]:
        db = server.db
        row = await users.get_row(db, user_id=routed.user_id)
        if row is None or row.get("disabled"):
            raise ApiError(403, "forbidden", "unknown or disabled technician")
        refused = await calls.login_refused(db, routed.user_id, routed.login_id, routed.token_id)
        if refused is not None:
            await audit.append(db, f"user:{row['username']}", "session.start.refused", routed.device_id,
                               {"node": routed.node, "kind": routed.kind, "mode": routed.mode, "reason": refused,
                                **({"token": routed.token_id} if routed.token_id else {})})
            raise calls.login_refusal(refused, "the routed session start")
        principal = dataclasses.replace(
            await users.principal_for(db, row, None if routed.token_id else routed.login_id),
            token_id=routed.token_id)
        if routed.kind == "support":  # a support-code client: its group is the code's
            client = await support_clients.get_client(db, routed.device_id)
            if client is None:
                raise ApiError.not_found("support client")
            group = client["group_name"]
        else:
            device = await devices.get(db, routed.device_id)
            if device is None:
                raise ApiError.not_found("device")
            if device["status"] == "revoked":
                raise ApiError(409, "device_revoked", "the device is revoked")
            group = device["group_name"]
        if not principal.can(Right.REMOTE_VIEW, group) or \
                (routed.mode == "control" and not principal.can(Right.REMOTE_CONTROL, group)):
            raise ApiError(403, "forbidden", "no right to a session on this device")
        session = await server.console_app[SESSIONS].request(
            device_id=routed.device_id, group=group, technician=principal, mode=routed.mode,
            reason=routed.reason, document_id=routed.document_id)
        view: dict[str, Any] = views.live_view(session)
        return view

    return start


def _runner(server: HelplineServer) -> Any:
    """Run a call on a session live here, forwarded by another node (the caller's rights read here)."""
    from server.sessions import SESSIONS, calls

    async def run(call: NodeCall) -> tuple[int, dict[str, Any]]:
        return await calls.run_forwarded(server.console_app[SESSIONS], server.db, action=call.action,
                                         session_id=call.session_id, user_id=call.user_id, login_id=call.login_id,
                                         token_id=call.token_id, from_node=call.node, body=call.body)

    return run


async def start_session(bus: NodeBus | None, sessions: SessionDriver, technician: Principal, *, device_id: str,
                        group: str, mode: Mode, reason: str, document_id: str | None = None,
                        kind: Literal["device", "support"] = "device") -> dict[str, Any]:
    """Start a session here when this node holds the device (or runs alone), else on the node that does.

    The one path for every way a session starts (the device page, a support request's Connect, a support
    code's client). The answer is the live session's view; from another node with ``node``/``node_url``.
    """
    if bus is None or sessions.connections.get(device_id) is not None:
        from server.sessions import views

        session = await sessions.request(device_id=device_id, group=group, technician=technician, mode=mode,
                                         reason=reason, document_id=document_id)
        view: dict[str, Any] = views.live_view(session)
        return view
    holder = await bus.holder(device_id)
    if holder is None:
        raise ApiError(409, "device_offline", "the device is not connected to any node")
    return await bus.router.request_session(holder, RoutedSession(
        device_id=device_id, user_id=technician.user_id, mode=mode, reason=reason, document_id=document_id,
        kind=kind, login_id=technician.session_id, token_id=technician.token_id, node=bus.node))


async def forward_call(bus: NodeBus, action: str, call: Call) -> tuple[int, dict[str, Any]] | None:
    """Run a session call on the node the session is live on; None when no other node has it live."""
    holder = await bus.router.live_holder(call.session_id)
    if holder is None or holder.node == bus.node:
        return None
    body = None if call.body is None else msgspec.to_builtins(call.body)
    return await bus.router.call(holder, NodeCall(action=action, session_id=call.session_id,
                                                  user_id=call.caller.user_id, login_id=call.caller.session_id,
                                                  token_id=call.caller.token_id, node=bus.node, body=body))
