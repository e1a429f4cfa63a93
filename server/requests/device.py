"""The device's side of support requests on the control channel.

``request.open`` is idempotent on the agent's ``local_id`` (a resend after a lost connection gets
the same request); ``request.add`` / ``request.withdraw`` name the request by that id too, and only
the device that opened it can reach it; a note is applied once per message id, and both are
acknowledged with ``request.ack`` (the agent resends until then). Each is answered with ``request.status``; whatever the
request refused is answered with an ``error`` naming the message and logged. Technicians' changes
reach the device through :meth:`DeviceRequests.on_event` (every node hears every committed event;
the one holding the device's connection sends), and on every connection the device is told about
each of its open requests.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import msgspec

from protocol.requests import ACK_CAPABILITY, FixOutcome, RequestAck, RequestAdd, RequestOpen, RequestWithdraw, is_png
from protocol.requests import MAX_OPEN_PER_DEVICE as PROTOCOL_MAX_OPEN

from ..errors import ApiError
from ..store import Row
from . import repository as repo
from .announce import Announcer
from .device_limits import DeviceLimits
from .events import RequestEvent
from .views import status_of

if TYPE_CHECKING:
    from ..agent_channel import AgentConnection
    from ..app import HelplineServer

log = logging.getLogger(__name__)

#: Open (waiting or claimed) requests one device may have (protocol.requests.MAX_OPEN_PER_DEVICE): each may hold
#: a 2 MiB screenshot, and a device opening more is broken or hostile (the agent keeps within it).
MAX_OPEN_PER_DEVICE = PROTOCOL_MAX_OPEN


class DeviceRequests:
    """Agent message handlers and the status push."""

    def __init__(self, server: HelplineServer, announcer: Announcer | None = None) -> None:
        self.server = server
        self.announcer = announcer
        self.limits = DeviceLimits()

    def register(self) -> None:
        handlers = self.server.agent_handlers
        handlers.register(RequestOpen, self.on_open)
        handlers.register(RequestAdd, self.on_add)
        handlers.register(RequestWithdraw, self.on_withdraw)
        handlers.register(FixOutcome, self.on_fix_outcome)
        self.server.on_agent_ready.append(self.on_ready)

    async def _refuse(self, conn: AgentConnection, message_id: str, code: str, text: str, kind: str) -> None:
        log.warning("request message refused", extra={"device_id": conn.device_id, "type": kind, "code": code,
                                                      "reason": text})
        await conn.reply_error(code, text, message_id)

    async def on_open(self, conn: AgentConnection, msg: RequestOpen) -> None:
        if msg.screenshot is not None and not is_png(msg.screenshot):
            await self._refuse(conn, msg.id, "invalid", "the screenshot must be a PNG image", msg.type_name())
            return
        if await repo.by_local_id(self.server.db, conn.device_id, msg.local_id) is None:  # a new one, not a resend
            if await repo.open_count(self.server.db, conn.device_id) >= MAX_OPEN_PER_DEVICE:
                await self._refuse(conn, msg.id, "too_many",
                                   f"this device already has {MAX_OPEN_PER_DEVICE} open requests", msg.type_name())
                return
            if not await self._take(conn, msg.id, "open", msg.type_name()):
                return
        new = repo.NewRequest(
            device_id=conn.device_id, local_id=msg.local_id, group_name=conn.group, requester=msg.requester,
            summary=msg.summary, details=msg.details, urgency=msg.urgency, screenshot=msg.screenshot,
            diagnostics=[msgspec.structs.asdict(d) for d in msg.diagnostics],
            attempt=None if msg.attempt is None else msgspec.structs.asdict(msg.attempt))
        hook = self.announcer.on_created if self.announcer is not None and self.announcer.enabled else None
        row, created = await repo.open_request(self.server.db, new, on_created=hook)
        if created:
            log.info("support request opened", extra={"device_id": conn.device_id, "request_id": row["id"],
                                                      "number": row["number"], "urgency": row["urgency"]})
        await conn.send(status_of(row))

    async def _own(self, conn: AgentConnection, msg: RequestAdd | RequestWithdraw) -> Row | None:
        row = await repo.by_local_id(self.server.db, conn.device_id, msg.local_id)
        if row is None:
            await self._refuse(conn, msg.id, "not_found", "no such request from this device", msg.type_name())
            await self._ack(conn, msg, applied=False)
        return row

    @staticmethod
    async def _ack(conn: AgentConnection, msg: RequestAdd | RequestWithdraw, *, applied: bool) -> None:
        """Tell the agent to stop resending ``msg`` (only agents that said they take ``request.ack``)."""
        if conn.hello is not None and ACK_CAPABILITY in conn.hello.capabilities:
            await conn.send(RequestAck(local_id=msg.local_id, message_id=msg.id, applied=applied))

    async def on_add(self, conn: AgentConnection, msg: RequestAdd) -> None:
        """A note from the user: applied once per message id (a resend after a lost ack changes nothing)."""
        row = await self._own(conn, msg)
        if row is None or not await self._take(conn, msg.id, "note", msg.type_name()):
            return  # rate limited: not acknowledged, the agent sends it again on its next connection
        await self._apply(conn, msg, row, repo.add_note(self.server.db, row["id"], actor=f"device:{conn.device_id}",
                                                        text=msg.text, from_device=True, message_id=msg.id))

    async def on_withdraw(self, conn: AgentConnection, msg: RequestWithdraw) -> None:
        row = await self._own(conn, msg)
        if row is None:
            return
        if row["state"] == repo.WITHDRAWN:  # a resend: already done
            await conn.send(status_of(row))
            await self._ack(conn, msg, applied=True)
            return
        await self._apply(conn, msg, row, repo.transition(self.server.db, row["id"], "withdraw",
                                                          actor=f"device:{conn.device_id}"))

    async def _apply(self, conn: AgentConnection, msg: RequestAdd | RequestWithdraw, row: Row,
                     change: Awaitable[Row]) -> None:
        """Await the user's change; answer the new status and acknowledge it, or refuse, answer the status as it
        was and acknowledge it as not applied (so the agent stops resending it)."""
        try:
            updated = await change
        except ApiError as exc:
            await self._refuse(conn, msg.id, exc.code, exc.message, msg.type_name())
            await conn.send(status_of(row))
            await self._ack(conn, msg, applied=False)
            return
        await conn.send(status_of(updated))
        await self._ack(conn, msg, applied=True)

    async def on_fix_outcome(self, conn: AgentConnection, msg: FixOutcome) -> None:
        """A self-service fix ran on the device (by the user, under a signed document): audited — at most a few
        records a minute per device, the rest counted in one aggregate record (the audit throttle)."""
        if not await self._take(conn, msg.id, "outcome", msg.type_name()):
            return
        await self.server.audit_throttle.append(
            self.server.db, f"device:{conn.device_id}", "fix.run", msg.fix_id,
            {"title": msg.title, "ok": msg.ok, "detail": msg.detail[:1000], "group": conn.group},
            peer=f"device:{conn.device_id}")

    async def _take(self, conn: AgentConnection, message_id: str, kind: str, type_name: str) -> bool:
        """Count one ``kind`` for the device; over its limit, answer ``rate_limited`` and return False."""
        if self.limits.take(conn.device_id, kind):
            return True
        limit, window = self.limits.limits[kind]
        await self._refuse(conn, message_id, "rate_limited",
                           f"at most {limit} of these per {window:g} s from one device", type_name)
        return False

    async def on_ready(self, conn: AgentConnection) -> None:
        """After hello: the current status of each open request, so the device's window is right again."""
        for row in await repo.open_for_device(self.server.db, conn.device_id):
            await conn.send(status_of(row))

    async def on_event(self, event: RequestEvent) -> None:
        """Push the new status to the device when this node holds its connection (its own changes were
        answered already)."""
        row = await repo.get(self.server.db, event.request_id)
        if row is None or event.actor == f"device:{row['device_id']}":
            return
        if event.kind == "announced":
            return
        conn = self.server.connections.get(row["device_id"])
        if conn is None or conn.hello is None:
            return
        await conn.send(status_of(row))
