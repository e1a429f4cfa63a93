"""The CMDB: inventory, change history, health series, alerts and webhooks, the /api/v1 routes.

``setup(server)`` wires it into the server: agent message handlers, the checksums sent in
``welcome``, REST routes and background tasks (retention, fleet alerts, webhook delivery).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from protocol.messages import HealthBatch, InventoryReport

from . import alerts, api, health_store, ingest, inventory_store, webhooks

if TYPE_CHECKING:
    from server.app import HelplineServer

log = logging.getLogger(__name__)

#: Seconds between maintenance passes (retention, offline/reboot alerts).
MAINTENANCE_INTERVAL_S = 60.0


def setup(server: HelplineServer) -> None:
    server.agent_handlers.register(InventoryReport, ingest.on_inventory)
    server.agent_handlers.register(HealthBatch, ingest.on_health)

    async def checksums(device_id: str) -> dict[str, str] | None:
        return await inventory_store.stored_checksums(server.db, device_id)

    server.inventory_checksums_provider = checksums
    api.register(server)

    async def maintenance() -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL_S)
            await maintenance_pass(server)

    server.background.append(maintenance)
    server.background.append(lambda: webhooks.run(lambda: server.db))


async def maintenance_pass(server: HelplineServer) -> None:
    """One pass of retention and fleet-wide alert checks (errors logged, never fatal)."""
    now = time.time()
    try:
        raw, rolled = await health_store.apply_retention(server.db, now)
        if raw or rolled:
            log.info("health retention", extra={"raw_deleted": raw, "rollups_deleted": rolled})
        await alerts.evaluate_fleet(server.db, now)
    except Exception:
        log.exception("CMDB maintenance pass failed")
