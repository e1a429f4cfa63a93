"""Agent message handlers: inventory reports and health batches, one transaction each.

Bad input gets an ``error`` reply (code ``invalid``) and changes nothing; the agent then
keeps its outbox. A delta whose unsent sections don't match the stored ones gets an
``inventory.request`` (send a full one) instead of an ack.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from protocol.messages import HealthAck, HealthBatch, InventoryAck, InventoryReport, InventoryRequest

from . import alerts, health_store, inventory_store
from .health_store import HealthRejected
from .sections import InventoryRejected, validate_report

if TYPE_CHECKING:
    from server.agent_channel import AgentConnection

log = logging.getLogger(__name__)


async def on_inventory(conn: AgentConnection, msg: InventoryReport) -> None:
    db = conn.server.db
    try:
        validate_report(msg.full, msg.sections, msg.checksums)
    except InventoryRejected as exc:
        log.warning("inventory refused", extra={"device_id": conn.device_id, "reason": str(exc)})
        await conn.reply_error(exc.code, str(exc), msg.id)
        return
    now = time.time()
    async with db.transaction() as tx:
        result = await inventory_store.apply_report(tx, conn.device_id, full=msg.full, sections=msg.sections,
                                                    checksums=msg.checksums, now=now)
        if not result.resync:
            await alerts.evaluate_inventory(tx, conn.device_id, now)
    if result.resync:
        log.info("inventory delta does not match; asking for a full one",
                 extra={"device_id": conn.device_id, "reason": result.reason})
        await conn.send(InventoryRequest(reason=result.reason[:256]))
        return
    log.info("inventory stored", extra={"device_id": conn.device_id, "full": msg.full,
                                        "sections": len(msg.sections), "changes": len(result.changes)})
    await conn.send(InventoryAck(in_reply_to=msg.id, checksums=result.checksums))


async def on_health(conn: AgentConnection, msg: HealthBatch) -> None:
    db = conn.server.db
    try:
        health_store.validate_batch(msg.samples, msg.gaps)
    except HealthRejected as exc:
        log.warning("health batch refused", extra={"device_id": conn.device_id, "reason": str(exc)})
        await conn.reply_error(exc.code, str(exc), msg.id)
        return
    async with db.transaction() as tx:
        result = await health_store.ingest(tx, conn.device_id, msg.samples, msg.gaps, time.time())
    await conn.send(HealthAck(in_reply_to=msg.id, up_to=result.up_to))
    if msg.gaps:
        log.warning("agent dropped health samples", extra={
            "device_id": conn.device_id, "dropped": sum(g.dropped for g in msg.gaps)})
    if result.fresh:
        try:
            await alerts.evaluate_health(db, conn.device_id, result.fresh)
        except Exception:
            log.exception("alert evaluation failed", extra={"device_id": conn.device_id})
