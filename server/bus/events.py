"""Event fan-out over NATS: every node hears within milliseconds that an event was committed.

The events table stays the system of record. The bus carries a *ring*, not the event: after a
transaction that published events commits, the node publishes ``helpline.events.<kind>`` and every
node's :class:`~server.events.EventWatcher` polls at once (dedupe is by seq, as for any poll; a
ring that arrives twice or for a row already read costs one empty query). A lost ring is caught by
the poll, which keeps running at :data:`SAFETY_POLL_S`. Rings carry no event data, so nothing read
from the bus is trusted beyond "look now".
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from server.events import PUBLISHED, EventWatcher
from server.store import Database, Transaction
from server.store.database import Params, Row

if TYPE_CHECKING:
    from server.config import ServerConfig

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "helpline.events."
#: The DB poll's interval when the bus rings (it only catches rings lost with a NATS outage).
SAFETY_POLL_S = 2.0
#: Event kinds are short dotted names (``device.revoked``); anything else is not used as a subject.
MAX_KIND_LEN = 64


def subject_for(kind: str) -> str | None:
    """``helpline.events.<kind>``, or None for a kind that is not a plain NATS token sequence."""
    if not kind or len(kind) > MAX_KIND_LEN or any(c in kind for c in " *>\t\r\n"):
        return None
    return SUBJECT_PREFIX + kind


class RingingDatabase:
    """The node's database; a transaction that published events rings the bus after it commits.

    Everything else is the wrapped database's (:class:`server.store.Database`).
    """

    def __init__(self, db: Database, client: Client) -> None:
        self.inner = db
        self.dialect = db.dialect
        self.url = db.url
        self._client = client

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        published: list[str] = []
        token = PUBLISHED.set(published)
        try:
            async with self.inner.transaction() as tx:
                yield tx
        finally:
            PUBLISHED.reset(token)
        await self.ring(published)  # reached only when the transaction committed

    async def ring(self, kinds: Iterable[str]) -> None:
        """Tell every node (this one included, by echo) that events of these kinds were committed."""
        for kind in dict.fromkeys(kinds):
            subject = subject_for(kind)
            if subject is None:
                continue
            try:
                await self._client.publish(subject, b"")
            except Exception as exc:  # the bus is down: the safety poll delivers it
                log.debug("event ring not sent", extra={"kind": kind, "reason": type(exc).__name__})

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await self.inner.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self.inner.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        return await self.inner.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return await self.inner.fetchall(sql, params)

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def listen(client: Client, watcher: EventWatcher) -> Subscription:
    """Every ring makes the watcher poll now; the poll itself slows to the safety interval."""

    async def on_ring(_msg: Msg) -> None:
        watcher.nudge()

    watcher.slow_down(SAFETY_POLL_S)
    return await client.subscribe(SUBJECT_PREFIX + ">", cb=on_ring)


async def ring_after_commits(db: Database, config: ServerConfig) -> tuple[Database, Client | None]:
    """For a process beside the nodes (``helpline admin …``): its commits ring the nodes too.

    Without ``nats_url``, or with NATS unreachable (3 s), the database as it is: the nodes' safety poll
    still delivers its events, within :data:`SAFETY_POLL_S`.
    """
    from .connection import BusUnavailable, connect

    try:
        client = await connect(config, start_timeout_s=3.0)
    except BusUnavailable as exc:
        log.warning("NATS unreachable: nodes learn of this change by their poll", extra={"reason": str(exc)})
        return db, None
    if client is None:
        return db, None
    return RingingDatabase(db, client), client  # type: ignore[return-value]
