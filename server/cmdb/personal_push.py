"""Pushing a changed personal-data policy to connected agents (issue 17).

The welcome tells an agent its group's policy when it connects; a change made while it is
connected reaches it as an ``inventory.request`` carrying the new policy, so it collects (or
stops collecting) local accounts and login history at once and sends a full inventory. Agents
without the "inventory.policy.push" capability learn it at their next connection; meanwhile
ingest refuses the sections they should no longer send (:func:`personal.excluded_sections`).

Every agent answers with a full inventory, so a node pushes :data:`PUSH_BATCH` agents at a time
with a pause between batches (a retention change reaches 10,000 agents in ~50 s rather than asking
all of them for a full inventory in the same second). Pushes run one after another in one task
that the server cancels when it stops, not inside the event watcher, which must stay free for
revocations. Each batch reads the policy afresh, so a later change is never overtaken.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from protocol.messages import InventoryRequest

from . import personal
from .personal_changes import ALL_GROUPS, PERSONAL_DATA_CHANGED

if TYPE_CHECKING:
    from server.app import HelplineServer

log = logging.getLogger(__name__)

PUSH_CAPABILITY = "inventory.policy.push"
PUSH_BATCH = 100
PUSH_PAUSE_S = 0.5


async def push(server: HelplineServer, subject: str, *, batch: int = PUSH_BATCH, pause_s: float = PUSH_PAUSE_S
               ) -> int:
    """Send the current policy to this node's agents of group ``subject`` (``*``: all); how many got it."""
    targets = []
    for device_id in server.connections.device_ids():
        conn = server.connections.get(device_id)
        if conn is None or conn.hello is None or PUSH_CAPABILITY not in conn.hello.capabilities:
            continue
        if subject in (ALL_GROUPS, conn.group):
            targets.append(conn)
    sent = 0
    for start in range(0, len(targets), batch):
        if start:
            await asyncio.sleep(pause_s)
        policies: dict[str, Any] = {}
        for conn in targets[start:start + batch]:
            if conn.group not in policies:
                policies[conn.group] = await personal.inventory_policy(server.db, conn.group)
            try:
                await conn.send(InventoryRequest(reason="personal data policy changed",
                                                 inventory_policy=policies[conn.group]))
                sent += 1
            except ConnectionError as exc:  # closing, or not past its hello yet (ChannelNotOpen)
                log.info("personal-data policy not pushed (connection closing)",
                         extra={"device_id": conn.device_id, "reason": str(exc)[:200]})
    if sent:
        log.info("personal-data policy pushed", extra={"group": subject, "agents": sent})
    return sent


async def run(server: HelplineServer) -> None:
    """Background task: push each announced change (the watcher exists only once the server started)."""
    if server.watcher is None:
        return
    changed: asyncio.Queue[str] = asyncio.Queue()

    async def on_changed(subject: str, _payload: dict[str, Any]) -> None:
        changed.put_nowait(subject)

    server.watcher.on(PERSONAL_DATA_CHANGED, on_changed)
    while True:
        subject = await changed.get()
        try:
            await push(server, subject)
        except Exception:
            log.exception("personal-data policy push failed", extra={"group": subject})
