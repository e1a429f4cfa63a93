"""The bus of one node, composed: connection, event rings, holder answers, routed sessions.

:func:`attach` is called by :meth:`server.app.HelplineServer.start` when ``nats_url`` is set, after
the database is open and before the listeners start.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from server.auth.rights import Principal, Right
from server.errors import ApiError

from . import events
from .connection import connect, node_name
from .routing import Holder, RoutedSession, Router

if TYPE_CHECKING:
    from server.app import HelplineServer

log = logging.getLogger(__name__)


@dataclass
class NodeBus:
    client: Client
    router: Router
    subscriptions: list[Subscription] = field(default_factory=list)

    @property
    def node(self) -> str:
        return self.router.node

    async def holder(self, device_id: str) -> Holder | None:
        return await self.router.holder(device_id)

    async def close(self) -> None:
        for sub in self.subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await self.client.drain()


async def attach(server: HelplineServer) -> NodeBus | None:
    """Connect the node to the bus (None without ``nats_url``); wraps ``server.db`` to ring on commit."""
    client = await connect(server.config)
    if client is None:
        return None
    assert server.watcher is not None, "the watcher is made before the bus is attached"
    server.db = events.RingingDatabase(server.db, client)  # type: ignore[assignment]
    url = server.config.node_url or server.console_url
    router = Router(client, node_name(server.config), url, server.connections, _starter(server))
    bus = NodeBus(client, router)
    bus.subscriptions.append(await events.listen(client, server.watcher))
    bus.subscriptions.extend(await router.listen())
    log.info("node on the bus", extra={"node": router.node, "node_url": url})
    return bus


def _starter(server: HelplineServer) -> Any:
    """Start a session routed from another node, with the technician's rights read here."""
    from server import devices
    from server.accounts import users
    from server.sessions import SESSIONS, views

    async def start(routed: RoutedSession) -> dict[str, Any]:
        db = server.db
        row = await users.get_row(db, user_id=routed.user_id)
        if row is None or row.get("disabled"):
            raise ApiError(403, "forbidden", "unknown or disabled technician")
        principal = await users.principal_for(db, row, None)
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
            device_id=device["id"], group=group, technician=principal, mode=routed.mode,
            reason=routed.reason, document_id=routed.document_id)
        view: dict[str, Any] = views.live_view(session)
        return view

    return start


async def routed_session(bus: NodeBus, device_id: str, technician: Principal, body: Any) -> dict[str, Any]:
    """A session for a device this node does not hold: requested on the node that holds it.

    ``body`` is the checked request body (``mode``, ``reason``, ``document_id``). The answer is the live
    session's view with ``node`` and ``node_url``: the viewer streams from there.
    """
    holder = await bus.holder(device_id)
    if holder is None:
        raise ApiError(409, "device_offline", "the device is not connected to any node")
    return await bus.router.request_session(holder, RoutedSession(
        device_id=device_id, user_id=technician.user_id, mode=body.mode, reason=body.reason,
        document_id=body.document_id))
