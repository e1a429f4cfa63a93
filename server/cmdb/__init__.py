"""The CMDB: inventory, change history, health series, alerts and webhooks, the /api/v1 routes.

``setup(server)`` wires it into the server: agent message handlers, the checksums sent in
``welcome``, REST routes and background tasks (retention, fleet alerts, webhook delivery).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from protocol.messages import HealthBatch, InventoryReport
from server import api as server_api

from . import (
    alerts,
    api,
    health_store,
    ingest,
    inventory_store,
    licences,
    licences_api,
    personal,
    personal_api,
    personal_push,
    relations_api,
    screen_backend,
    software_search,
    vulns_api,
    webhooks,
)

if TYPE_CHECKING:
    from server.agent_channel import AgentConnection
    from server.app import HelplineServer

log = logging.getLogger(__name__)

#: Agents that understand ``welcome.health_seq`` say so in their hello.
HEALTH_SEQ_CAPABILITY = "health.seq"
#: Agents that follow ``welcome.inventory_policy`` (personal data, issue 17) say so in their hello.
INVENTORY_POLICY_CAPABILITY = "inventory.policy"


def setup(server: HelplineServer) -> None:
    server.agent_handlers.register(InventoryReport, ingest.on_inventory)
    server.agent_handlers.register(HealthBatch, ingest.on_health)
    screen_backend.attach(server)  # issue 14: kept in devices for every node

    async def checksums(device_id: str) -> dict[str, str] | None:
        return await inventory_store.stored_checksums(server.db, device_id)

    server.inventory_checksums_provider = checksums

    async def welcome_fields(conn: AgentConnection) -> dict[str, Any]:
        if conn.hello is None or HEALTH_SEQ_CAPABILITY not in conn.hello.capabilities:
            return {}  # an older agent would refuse a field it doesn't know
        return {"health_seq": await health_store.max_seq(server.db, conn.device_id)}

    server.agent_handlers.welcome_fields.append(welcome_fields)

    async def policy_field(conn: AgentConnection) -> dict[str, Any]:
        if conn.hello is None or INVENTORY_POLICY_CAPABILITY not in conn.hello.capabilities:
            return {}
        return {"inventory_policy": await personal.inventory_policy(server.db, conn.group)}

    server.agent_handlers.welcome_fields.append(policy_field)
    api.register(server.console_app)
    server_api.add_routes(server.console_app,
                          relations_api.routes() + licences_api.routes() + vulns_api.routes()
                          + personal_api.routes())
    server.background.append(lambda: personal_push.run(server))

    async def maintenance() -> None:
        while True:
            await asyncio.sleep(server.config.maintenance_interval_s)
            await maintenance_pass(server)

    server.background.append(maintenance)

    async def fill_version_keys() -> None:
        try:
            filled = await software_search.backfill_keys(server.db)
        except Exception:
            log.exception("software version keys: back-fill failed (searches compare those rows in Python)")
            return
        if filled:
            log.info("software version keys back-filled", extra={"rows": filled})

    server.background.append(fill_version_keys)
    server.background.append(lambda: webhooks.run(lambda: server.db))


async def maintenance_pass(server: HelplineServer) -> None:
    """One pass of retention and fleet-wide alert checks (errors logged, never fatal)."""
    now = time.time()
    try:
        raw, rolled = await health_store.apply_retention(server.db, now)
        if raw or rolled:
            log.info("health retention", extra={"raw_deleted": raw, "rollups_deleted": rolled})
        await alerts.evaluate_fleet(server.db, now)
        purged = await personal.purge(server.db, now)
        if purged.sections_deleted or purged.sections_trimmed or purged.changes_deleted:
            log.info("personal data purged", extra={"sections_deleted": purged.sections_deleted,
                                                    "sections_trimmed": purged.sections_trimmed,
                                                    "changes_deleted": purged.changes_deleted})
        await licences.evaluate_all(server.db, now)
    except Exception:
        log.exception("CMDB maintenance pass failed")
