"""Alert webhook delivery: a durable queue in ``webhook_deliveries`` with retries and backoff.

Rows are written in the alert's own transaction; this loop POSTs due rows and marks them
delivered on a 2xx, otherwise schedules the next attempt with exponential backoff (full
jitter, capped) until ``max_attempts``. Each POST carries ``X-Helpline-Delivery`` so a
receiver can drop a repeat if our success bookkeeping is ever lost mid-flight.

Every node runs this loop over the one shared table, so a row is *claimed* before its POST: a
conditional UPDATE moves its ``next_attempt_at`` past the request's timeout (a lease) only if
nobody else did first. The node that wins posts; a node that dies mid-POST leaves a lease that
expires, and the row is tried again by whichever node comes next.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import aiohttp

from common.outage import OutageLog
from server.store import Database, StoreUnavailable

from . import settings

log = logging.getLogger(__name__)


#: How much longer than the POST's own timeout a claimed row stays with the node that claimed it.
LEASE_MARGIN_S = 30.0


async def _claim(db: Database, delivery_id: int, attempts: int, due_at: float, lease_until: float) -> bool:
    """Take the row for this attempt: only one node's conditional UPDATE matches it."""
    changed = await db.execute("UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ? AND attempts = ?"
                               " AND next_attempt_at = ? AND delivered_at IS NULL AND failed_at IS NULL",
                               (lease_until, delivery_id, attempts, due_at))
    return changed == 1


async def deliver_due(db: Database, session: aiohttp.ClientSession, now: float | None = None) -> int:
    """Attempt every due delivery once; return how many succeeded."""
    now = time.time() if now is None else now
    hook = await settings.webhook(db)
    rows = await db.fetchall("SELECT * FROM webhook_deliveries WHERE delivered_at IS NULL AND failed_at IS NULL"
                             " AND next_attempt_at <= ? ORDER BY id LIMIT 100", (now,))
    delivered = 0
    lease_s = float(hook["timeout_s"]) + LEASE_MARGIN_S
    for row in rows:
        if not await _claim(db, row["id"], row["attempts"], row["next_attempt_at"], time.time() + lease_s):
            continue  # another node took it
        error = ""
        try:
            async with session.post(row["url"], data=row["payload"],
                                    headers={"Content-Type": "application/json",
                                             "X-Helpline-Delivery": str(row["id"])},
                                    timeout=aiohttp.ClientTimeout(total=float(hook["timeout_s"]))) as resp:
                if 200 <= resp.status < 300:
                    await db.execute("UPDATE webhook_deliveries SET delivered_at = ?, attempts = attempts + 1"
                                     " WHERE id = ?", (time.time(), row["id"]))
                    delivered += 1
                    continue
                error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        attempts = row["attempts"] + 1
        if attempts >= int(hook["max_attempts"]):
            log.error("webhook delivery abandoned", extra={"delivery": row["id"], "attempts": attempts,
                                                           "error": error})
            await db.execute("UPDATE webhook_deliveries SET attempts = ?, failed_at = ?, last_error = ? WHERE id = ?",
                             (attempts, time.time(), error[:500], row["id"]))
            continue
        delay = random.uniform(0, min(float(hook["backoff_cap_s"]), float(hook["backoff_s"]) * 2 ** (attempts - 1)))
        log.warning("webhook delivery failed; will retry", extra={"delivery": row["id"], "attempt": attempts,
                                                                  "retry_in_s": round(delay, 2), "error": error})
        await db.execute("UPDATE webhook_deliveries SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
                         (attempts, time.time() + delay, error[:500], row["id"]))
    return delivered


async def run(db_getter: object, interval: float = 0.5) -> None:
    """Background loop; ``db_getter()`` returns the server's database (set after start)."""
    assert callable(db_getter)
    outage = OutageLog(log, "webhook delivery pass")  # a database outage: one line, not one every pass
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                await deliver_due(db_getter(), session)
            except StoreUnavailable as exc:
                outage.failed(exc)
            except Exception:
                log.exception("webhook delivery pass failed")
            else:
                outage.succeeded()
            await asyncio.sleep(interval)
