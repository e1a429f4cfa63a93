"""The nodes table: every node on the bus says which console URL technicians reach it at.

Those URLs are what a stream ticket's ``Origin`` may be (a page of another node's console opening a
session's stream here: server/sessions/tickets.py) and what the console's Content-Security-Policy
lets a page connect to (``wss://`` of each). A node registers when it joins the bus and refreshes
``seen_at`` every :data:`HEARTBEAT_S`, and says so on ``helpline.nodes.joined`` so the others re-read the
table at once (a page served before would lack the new node in its CSP); nodes not seen for
:data:`FORGET_S` no longer count, so a decommissioned node's origin stops being accepted by itself.
The list is cached: a lookup of an origin not in the cache re-reads the table (at most every
:data:`REREAD_S`), so a node that just started is known at its first ticket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from common.origins import origin_of
from server.store import Database

log = logging.getLogger(__name__)

JOINED_SUBJECT = "helpline.nodes.joined"
HEARTBEAT_S = 60.0
FORGET_S = 15 * 60.0
REREAD_S = 2.0


class NodeDirectory:
    def __init__(self, db: Callable[[], Database], node: str, url: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.node = node
        self.url = url
        self._clock = clock
        self._origins: set[str] = {origin_of(url)}
        self._read_at = float("-inf")
        self._started = clock()

    async def register(self) -> None:
        """Record (or refresh) this node's row."""
        now = self._clock()
        await self._db().execute(
            "INSERT INTO nodes (id, url, started_at, seen_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE"
            " SET url = excluded.url, started_at = excluded.started_at, seen_at = excluded.seen_at",
            (self.node, self.url, self._started, now))

    async def refresh(self) -> set[str]:
        now = self._clock()
        rows = await self._db().fetchall("SELECT url FROM nodes WHERE seen_at > ?", (now - FORGET_S,))
        self._origins = {origin_of(r["url"]) for r in rows} | {origin_of(self.url)}
        self._read_at = now
        return self._origins

    def origins(self) -> set[str]:
        """The known nodes' console origins (cached)."""
        return set(self._origins)

    async def knows(self, origin: str) -> bool:
        if origin in self._origins:
            return True
        if self._clock() - self._read_at >= REREAD_S:
            return origin in await self.refresh()
        return False

    async def listen(self, client: Client) -> Subscription:
        """Re-read the table when a node joins; then say this node joined."""

        async def on_joined(_msg: Msg) -> None:
            try:
                await self.refresh()
            except Exception as exc:  # the database is away: the heartbeat's re-read catches up
                log.warning("node directory not refreshed", extra={"reason": type(exc).__name__})

        subscription = await client.subscribe(JOINED_SUBJECT, cb=on_joined)
        await client.publish(JOINED_SUBJECT, b"")
        return subscription

    async def run(self) -> None:
        """Heartbeat and re-read, for ever (a failed round is logged and tried again next time)."""
        while True:
            try:
                await self.register()
                await self.refresh()
            except Exception as exc:  # the database is away: the cache stays, the next beat tries again
                log.warning("node directory not refreshed", extra={"reason": type(exc).__name__})
            await asyncio.sleep(HEARTBEAT_S)
