"""Keep agents' grant books current: push on connect and on every change (CLI included)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from protocol.session import GrantPush, GrantRevoke

from . import store

if TYPE_CHECKING:
    from ..agent_channel import AgentConnection
    from ..app import HelplineServer

log = logging.getLogger(__name__)


def setup(server: HelplineServer) -> None:
    async def on_ready(conn: AgentConnection) -> None:
        grants, revoked = await store.for_device(server.db, conn.device_id, conn.group)
        if grants or revoked:
            await conn.send(GrantPush(grants=grants[:64], revoked=revoked))

    async def on_changed(grant_id: str, payload: dict[str, Any]) -> None:
        row = await store.get(server.db, grant_id)
        if row is None:
            return
        signed = store.signed_of(row)
        for device_id in server.connections.device_ids():
            conn = server.connections.get(device_id)
            if conn is None or not store.covers(row, device_id, conn.group):
                continue
            try:
                if row["status"] == "revoked":
                    await conn.send(GrantRevoke(grant_id=grant_id))
                elif signed is not None:
                    await conn.send(GrantPush(grants=[signed]))
            except Exception:
                log.exception("could not push grant change", extra={"grant_id": grant_id, "device_id": device_id})

    async def register_watcher() -> None:
        assert server.watcher is not None
        server.watcher.on(store.GRANT_CHANGED, on_changed)

    server.on_agent_ready.append(on_ready)
    server.background.append(register_watcher)

