"""Cross-process notifications through the database.

Admin commands run in their own process (``helpline admin device revoke``) while the server
runs. They write an event row; every server node polls for new rows a few times a second
and acts (close a revoked device's connection, a disabled user's websockets, push a grant
revocation). Works the same on SQLite and on PostgreSQL shared by several nodes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .store import Database, Transaction

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], Awaitable[None]]


async def publish_in(tx: Transaction, kind: str, subject: str, payload: dict[str, Any] | None = None) -> None:
    await tx.execute(
        "INSERT INTO events (ts, kind, subject, payload) VALUES (?, ?, ?, ?)",
        (time.time(), kind, subject, json.dumps(payload or {})),
    )


class EventWatcher:
    """Polls the events table and dispatches new rows to handlers by kind."""

    def __init__(self, db: Database, *, interval: float = 0.2) -> None:
        self._db = db
        self._interval = interval
        self._handlers: dict[str, list[Handler]] = {}
        self._last_seq = 0

    def on(self, kind: str, handler: Handler) -> None:
        self._handlers.setdefault(kind, []).append(handler)

    async def start_from_now(self) -> None:
        row = await self._db.fetchone("SELECT MAX(seq) AS m FROM events")
        self._last_seq = int(row["m"] or 0) if row else 0

    async def poll_once(self) -> int:
        rows = await self._db.fetchall(
            "SELECT seq, kind, subject, payload FROM events WHERE seq > ? ORDER BY seq LIMIT 500", (self._last_seq,)
        )
        for row in rows:
            self._last_seq = row["seq"]
            for handler in self._handlers.get(row["kind"], []):
                try:
                    await handler(row["subject"], json.loads(row["payload"]))
                except Exception:
                    log.exception("event handler for %s %s failed", row["kind"], row["subject"])
        return len(rows)

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("event poll failed; retrying")
            await asyncio.sleep(self._interval)
