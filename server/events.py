"""Cross-process notifications through the database.

Admin commands run in their own process (``helpline admin device revoke``) while the server
runs. They write an event row; every server node polls for new rows a few times a second
and acts (close a revoked device's connection, a disabled user's websockets, push a changed
authority to agents). Works the same on SQLite and on PostgreSQL shared by several nodes.

On PostgreSQL, sequence numbers are taken when a row is inserted, not when its transaction
commits: seq 11 can become visible before seq 10. A watcher that only asked for ``seq > last``
would skip 10 for good, so the seqs it jumped over stay wanted for :data:`GAP_WAIT_S` (a
rolled-back insert leaves a gap that never fills).

While the database is down the poll fails every :attr:`EventWatcher._interval` (0.2 s): that is
logged once when it starts failing, with the reason, and once when it works again (with how long
and how many polls failed), not as a traceback per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from .store import Database, StoreUnavailable, Transaction
from .store.errors import reason_of

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], Awaitable[None]]

#: How long a skipped seq is still looked for (longer than any transaction that publishes).
GAP_WAIT_S = 30.0
#: At most this many skipped seqs are tracked (the oldest are given up first).
MAX_GAPS = 200


#: Kinds published inside the current transaction, when the bus listens (server/bus/events.py rings
#: every node for them once the transaction commits); None: nobody listens.
PUBLISHED: ContextVar[list[str] | None] = ContextVar("helpline_events_published", default=None)


async def publish_in(tx: Transaction, kind: str, subject: str, payload: dict[str, Any] | None = None) -> None:
    await tx.execute(
        "INSERT INTO events (ts, kind, subject, payload) VALUES (?, ?, ?, ?)",
        (time.time(), kind, subject, json.dumps(payload or {})),
    )
    published = PUBLISHED.get()
    if published is not None:
        published.append(kind)


class EventWatcher:
    """Polls the events table and dispatches new rows to handlers by kind."""

    def __init__(self, db: Database, *, interval: float = 0.2) -> None:
        self._db = db
        self._interval = interval
        self._handlers: dict[str, list[Handler]] = {}
        self._last_seq = 0
        #: Seqs below ``_last_seq`` not seen yet (maybe uncommitted), with when they were noticed.
        self._gaps: dict[int, float] = {}
        #: Set by :meth:`nudge` (the bus says an event was committed): poll now, not at the interval.
        self._nudged = asyncio.Event()

    def nudge(self) -> None:
        """Poll at once: an event was committed (on any node; the bus rings). Dedupe is by seq."""
        self._nudged.set()

    def slow_down(self, interval: float) -> None:
        """With the bus ringing, the poll is only the safety net for a lost ring."""
        self._interval = interval

    def on(self, kind: str, handler: Handler) -> None:
        self._handlers.setdefault(kind, []).append(handler)

    @property
    def last_seq(self) -> int:
        """The newest event seq dispatched (the metrics' bus lag counts what is committed after it)."""
        return self._last_seq

    async def start_from_now(self) -> None:
        """Skip what is already committed, but keep wanting seqs still in flight at start.

        A transaction that took seq 10 may commit after seq 11 was already visible at start:
        the last :data:`MAX_GAPS` seqs below the maximum that are not visible yet are tracked
        as gaps for :data:`GAP_WAIT_S`, exactly as polling does. One statement reads both
        the maximum and the visible seqs, so they come from the same snapshot.
        """
        rows = await self._db.fetchall(
            "SELECT seq FROM events WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM events) - ?", (MAX_GAPS,))
        visible = {int(r["seq"]) for r in rows}
        self._last_seq = max(visible, default=0)
        noticed = time.monotonic()
        self._gaps = {seq: noticed for seq in range(max(1, self._last_seq - MAX_GAPS + 1), self._last_seq)
                      if seq not in visible}

    async def poll_once(self) -> int:
        self._forget_old_gaps()
        wanted = sorted(self._gaps)
        sql = "SELECT seq, kind, subject, payload FROM events WHERE seq > ?"
        if wanted:
            sql += f" OR seq IN ({', '.join('?' * len(wanted))})"
        rows = await self._db.fetchall(sql + " ORDER BY seq LIMIT 500", (self._last_seq, *wanted))
        for row in rows:
            seq = int(row["seq"])
            if seq > self._last_seq:
                noticed = time.monotonic()
                for missing in range(max(self._last_seq + 1, seq - MAX_GAPS), seq):
                    self._gaps[missing] = noticed
                self._last_seq = seq
            else:
                self._gaps.pop(seq, None)
            for handler in self._handlers.get(row["kind"], []):
                try:
                    await handler(row["subject"], json.loads(row["payload"]))
                except Exception:
                    log.exception("event handler for %s %s failed", row["kind"], row["subject"])
        return len(rows)

    def _forget_old_gaps(self) -> None:
        deadline = time.monotonic() - GAP_WAIT_S
        for seq in [s for s, noticed in self._gaps.items() if noticed < deadline]:
            del self._gaps[seq]
        for seq in sorted(self._gaps)[:-MAX_GAPS]:
            del self._gaps[seq]

    async def run(self) -> None:
        failing_since: float | None = None
        failures = 0
        while True:
            try:
                await self.poll_once()
            except Exception as exc:
                failures += 1
                if failing_since is None:
                    failing_since = time.monotonic()
                    # A database outage is expected and explained by its reason; anything else is a bug.
                    expected = isinstance(exc, StoreUnavailable)
                    log.warning("event poll failing; retrying every %.1f s", self._interval,
                                extra={"reason": exc.reason if isinstance(exc, StoreUnavailable) else reason_of(exc)},
                                exc_info=None if expected else exc)
            else:
                if failing_since is not None:
                    log.info("event poll works again", extra={
                        "failed_for_s": round(time.monotonic() - failing_since, 1), "failed_polls": failures})
                    failing_since, failures = None, 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), self._interval)
            self._nudged.clear()
