"""Announce support requests to Slack and Microsoft Teams incoming webhooks.

A new request is announced in the transaction that creates it, and a request still waiting past
``waiting_threshold_s`` once more (one node wins the conditional update that marks it). Both only
*queue* a POST in ``webhook_deliveries``: the CMDB's delivery loop (:mod:`server.cmdb.webhooks`)
sends it with retries, backoff and a delivery id, so a slow or failing chat service never holds up
the device's request. The webhook URLs are secrets: they are stored only in that queue and never
logged; the ``announced`` event records the kinds ("slack", "teams"), not the URLs.

Payload shapes: Slack ``{"text", "blocks"}`` (mrkdwn with ``&``, ``<``, ``>`` escaped, so a device's
text cannot mention ``<!channel>`` or forge a link); Teams ``{"type": "message", "attachments":
[{"contentType": "application/vnd.microsoft.card.adaptive", "content": <AdaptiveCard 1.4>}]}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from ..store import Database, Row, StoreUnavailable, Transaction
from . import repository as repo
from .config import RequestsConfig

log = logging.getLogger(__name__)

TEAMS_CARD = "application/vnd.microsoft.card.adaptive"


def _age(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def headline(row: Row, what: str, now: float) -> str:
    if what == "waiting":
        return f"Support request #{row['number']} has been waiting {_age(now - float(row['created_at']))}"
    return f"New support request #{row['number']}"


def slack_payload(row: Row, what: str, *, hostname: str, queue_url: str, now: float) -> dict[str, Any]:
    title = headline(row, what, now)
    summary = _slack_escape(str(row["summary"]))
    facts = (f"*Urgency:* {row['urgency']}  *Group:* {_slack_escape(str(row['group_name']))}  "
             f"*Device:* {_slack_escape(hostname or str(row['device_id']))}  "
             f"*From:* {_slack_escape(str(row['requester']) or '-')}")
    return {
        "text": f"{title}: {summary}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*\n{summary}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": facts}]},
            {"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Open the queue"}, "url": queue_url}]},
        ],
    }


def teams_payload(row: Row, what: str, *, hostname: str, queue_url: str, now: float) -> dict[str, Any]:
    facts = [{"title": "Urgency", "value": str(row["urgency"])}, {"title": "Group", "value": str(row["group_name"])},
             {"title": "Device", "value": hostname or str(row["device_id"])},
             {"title": "From", "value": str(row["requester"]) or "-"}]
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard", "version": "1.4",
        "body": [{"type": "TextBlock", "text": headline(row, what, now), "weight": "Bolder", "size": "Medium",
                  "wrap": True},
                 {"type": "TextBlock", "text": str(row["summary"]), "wrap": True},
                 {"type": "FactSet", "facts": facts}],
        "actions": [{"type": "Action.OpenUrl", "title": "Open the queue", "url": queue_url}],
    }
    return {"type": "message", "attachments": [{"contentType": TEAMS_CARD, "contentUrl": None, "content": card}]}


BUILDERS = {"slack": slack_payload, "teams": teams_payload}


class Announcer:
    """Queues the webhook POSTs for new and long-waiting requests."""

    def __init__(self, config: RequestsConfig, console_url: str) -> None:
        self.config = config
        self.queue_url = (config.console_url or console_url).rstrip("/") + "/#/queue"

    @property
    def enabled(self) -> bool:
        return bool(self.config.targets)

    async def _queue_in(self, tx: Transaction, row: Row, what: str, now: float) -> None:
        host = await tx.fetchone("SELECT hostname FROM devices WHERE id = ?", (row["device_id"],))
        hostname = str(host["hostname"]) if host else ""
        targets = self.config.targets
        for kind, url in targets.items():
            payload = BUILDERS[kind](row, what, hostname=hostname, queue_url=self.queue_url, now=now)
            await tx.execute("INSERT INTO webhook_deliveries (url, payload, created_at, attempts, next_attempt_at)"
                             " VALUES (?, ?, ?, 0, ?)", (url, json.dumps(payload), now, now))
        await repo.event_in(tx, row["id"], "announced", "server", {"what": what, "targets": sorted(targets)}, now)

    async def on_created(self, tx: Transaction, row: Row) -> None:
        """The repository's creation hook: announce the new request in its own transaction."""
        if self.enabled:
            await self._queue_in(tx, row, "new", time.time())

    async def announce_waiting(self, db: Database, now: float | None = None) -> int:
        """Announce each request waiting past the threshold (once); how many were announced."""
        threshold = self.config.waiting_threshold_s
        if not self.enabled or threshold <= 0:
            return 0
        now = time.time() if now is None else now
        done = 0
        for row in await repo.waiting_unannounced(db, older_than=now - threshold):
            async with db.transaction() as tx:
                if not await repo.claim_waiting_announcement(tx, row["id"], now):
                    continue  # claimed, resolved or announced meanwhile (maybe by another node)
                await self._queue_in(tx, row, "waiting", now)
            done += 1
        return done

    async def run(self, db_getter: Any) -> None:
        """Background loop on every node (the conditional update keeps it to one announcement)."""
        failing = False
        while True:
            try:
                await self.announce_waiting(db_getter())
            except StoreUnavailable as exc:
                if not failing:
                    log.warning("waiting-request announcements paused", extra={"reason": exc.reason})
                failing = True
            except Exception:
                log.exception("waiting-request announcement pass failed")
            else:
                failing = False
            await asyncio.sleep(self.config.waiting_check_s)
