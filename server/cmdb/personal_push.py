"""Pushing a changed personal-data policy to connected agents (issue 17).

The welcome tells an agent its group's policy when it connects; a change made while it is
connected reaches it as an ``inventory.request`` carrying the new policy, so it collects (or
stops collecting) local accounts and login history at once and sends a full inventory. Agents
without the "inventory.policy.push" capability learn it at their next connection; meanwhile
ingest refuses the sections they should no longer send (:func:`personal.excluded_sections`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from protocol.errors import LocalProtocolError
from protocol.messages import InventoryRequest

from . import personal
from .personal_changes import ALL_GROUPS, PERSONAL_DATA_CHANGED

if TYPE_CHECKING:
    from server.app import HelplineServer

log = logging.getLogger(__name__)

PUSH_CAPABILITY = "inventory.policy.push"


async def push(server: HelplineServer, subject: str, _payload: dict[str, Any]) -> int:
    """Send the current policy to this node's agents of group ``subject`` (``*``: all); how many got it."""
    policies: dict[str, Any] = {}
    sent = 0
    for device_id in server.connections.device_ids():
        conn = server.connections.get(device_id)
        if conn is None or conn.hello is None or PUSH_CAPABILITY not in conn.hello.capabilities:
            continue
        if subject not in (ALL_GROUPS, conn.group):
            continue
        if conn.group not in policies:
            policies[conn.group] = await personal.inventory_policy(server.db, conn.group)
        try:
            await conn.send(InventoryRequest(reason="personal data policy changed",
                                             inventory_policy=policies[conn.group]))
            sent += 1
        except (ConnectionError, LocalProtocolError) as exc:  # closing, or not past its hello yet
            log.info("personal-data policy not pushed (connection closing)",
                     extra={"device_id": device_id, "reason": str(exc)[:200]})
    if sent:
        log.info("personal-data policy pushed", extra={"group": subject, "agents": sent})
    return sent


async def subscribe(server: HelplineServer) -> None:
    """The event watcher exists only once the server started; hook in then."""
    async def on_changed(subject: str, payload: dict[str, Any]) -> None:
        await push(server, subject, payload)

    if server.watcher is not None:
        server.watcher.on(PERSONAL_DATA_CHANGED, on_changed)

