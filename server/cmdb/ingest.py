"""Agent message handlers: inventory reports and health batches, one transaction each.

Items are judged one by one: a bad health sample or inventory section is refused alone — logged
with the device id, named with its reason in the ack for agents that announce "health.partial" /
"inventory.partial" — and everything else in the message is stored, so one bad item can never
hold up a device's stream (issue 12). Older agents get the ack without the list (they would refuse
an unknown field); it still covers the refused samples, so they move past them too.

Only a malformed batch as a whole (seqs out of order, a backwards gap) gets an ``error`` reply
(code ``invalid``) and changes nothing. A delta whose unsent sections don't match the stored ones
gets an ``inventory.request`` (send a full one) instead of an ack.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import msgspec

from protocol import limits
from protocol.messages import HealthAck, HealthBatch, InventoryAck, InventoryReport, InventoryRequest

from . import alerts, derived, health_store, inventory_store, personal
from .health_store import HealthRejected
from .sections import split_report

if TYPE_CHECKING:
    from server.agent_channel import AgentConnection

log = logging.getLogger(__name__)

#: Agents that read ``health.ack.rejected`` / ``inventory.ack.rejected`` say so in their hello.
HEALTH_PARTIAL = "health.partial"
INVENTORY_PARTIAL = "inventory.partial"
#: Refused items named in one log line (the count is always complete).
LOGGED_REFUSALS = 5


def _speaks(conn: AgentConnection, capability: str) -> bool:
    return conn.hello is not None and capability in conn.hello.capabilities


async def on_inventory(conn: AgentConnection, msg: InventoryReport) -> None:
    db = conn.server.db
    excluded = await personal.excluded_sections(db, conn.group)
    good, rejected = split_report(msg.full, msg.sections, msg.checksums, excluded)
    if rejected:
        log.warning("inventory sections refused", extra={
            "device_id": conn.device_id, "count": len(rejected),
            "sections": [f"{r.section} ({r.code}): {r.reason}" for r in rejected[:LOGGED_REFUSALS]]})
    now = time.time()
    async with db.transaction() as tx:
        result = await inventory_store.apply_report(tx, conn.device_id, full=msg.full, sections=good,
                                                    checksums=msg.checksums, now=now,
                                                    refused={r.section for r in rejected})
        if not result.resync:
            await alerts.evaluate_inventory(tx, conn.device_id, now)
            await derived.after_inventory(tx, conn.device_id, {c.section for c in result.changes}, now)
    if result.resync:
        log.info("inventory delta does not match; asking for a full one",
                 extra={"device_id": conn.device_id, "reason": result.reason})
        await conn.send(InventoryRequest(reason=result.reason[:256]))
        return
    log.info("inventory stored", extra={"device_id": conn.device_id, "full": msg.full,
                                        "sections": len(good), "refused": len(rejected),
                                        "changes": len(result.changes)})
    named = rejected[:limits.MAX_SECTIONS] if rejected and _speaks(conn, INVENTORY_PARTIAL) else msgspec.UNSET
    await conn.send(InventoryAck(in_reply_to=msg.id, checksums=result.checksums, rejected=named))


async def on_health(conn: AgentConnection, msg: HealthBatch) -> None:
    db = conn.server.db
    try:
        good, rejected = health_store.split_batch(msg.samples, msg.gaps)
    except HealthRejected as exc:
        log.warning("health batch refused", extra={"device_id": conn.device_id, "reason": str(exc)})
        await conn.reply_error(exc.code, str(exc), msg.id)
        return
    async with db.transaction() as tx:
        result = await health_store.ingest(tx, conn.device_id, good, msg.gaps, time.time(), rejected=rejected)
    named = rejected if rejected and _speaks(conn, HEALTH_PARTIAL) else msgspec.UNSET
    await conn.send(HealthAck(in_reply_to=msg.id, up_to=result.up_to, rejected=named))
    if rejected:
        log.warning("health samples refused", extra={
            "device_id": conn.device_id, "count": len(rejected), "stored": result.inserted,
            "samples": [f"{r.seq} ({r.code}): {r.reason}" for r in rejected[:LOGGED_REFUSALS]]})
    if msg.gaps:
        log.warning("agent dropped health samples", extra={
            "device_id": conn.device_id, "dropped": sum(g.dropped for g in msg.gaps)})
    if result.fresh:
        try:
            await alerts.evaluate_health(db, conn.device_id, result.fresh)
        except Exception:
            log.exception("alert evaluation failed", extra={"device_id": conn.device_id})
