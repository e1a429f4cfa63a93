"""Bounded audit of unauthenticated requests: a flood of refused enrollments or logins cannot
grow the audit log without limit.

Anyone can send enrollment and login requests, and each refusal used to add one audit
record. Two limits now apply, both in memory and per server node:

* :class:`AuditThrottle` — per (action, peer address) at most :attr:`~AuditThrottle.per_window`
  records in a window (a minute); further ones are only counted, and when the window closes one
  aggregate record says how many (``details.more``, ``details.summary`` = "57 more from
  10.0.0.5 in the last minute"). The server flushes closed windows every few seconds
  (:meth:`~AuditThrottle.run`) and all of them when it stops.
* :class:`RefusalLimiter` — a peer refused more than ``limit`` times in a window gets 429 (with
  ``Retry-After``) without its request being looked at, until the window slides on.

Peers are counted separately up to :data:`MAX_PEERS` (the limiter counts IPv6 by /64, which one
subscriber holds); beyond that, new peers share one bucket (``peer`` ``*``), so memory stays bounded
under a spoofed-source flood too — or, for a limiter with a shared limit behind it
(``RefusalLimiter.overflow_passes``: recovery's database count), go on untracked to that limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.outage import OutageLog

from . import audit
from .net.limits import address_key
from .store import Database
from .store.errors import StoreUnavailable

log = logging.getLogger(__name__)

#: Peers tracked one by one; more share the ``*`` bucket.
MAX_PEERS = 10_000
OTHERS = "*"


@dataclass
class _Window:
    started: float
    actor: str
    target: str
    written: int = 0
    more: int = 0
    first_more: float = 0.0
    last_more: float = 0.0


@dataclass
class AuditThrottle:
    """At most ``per_window`` audit records per (action, peer) and window; the rest aggregated."""

    per_window: int = 5
    window_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _windows: dict[tuple[str, str], _Window] = field(default_factory=dict)

    async def append(self, db: Database, actor: str, action: str, target: str = "",
                     details: dict[str, Any] | None = None, *, peer: str) -> bool:
        """Audit one unauthenticated event from ``peer``; False when it was only counted."""
        now = self.clock()
        key = self._key(action, peer)
        window = self._windows.get(key)
        closed: tuple[tuple[str, str], _Window] | None = None
        if window is not None and now - window.started >= self.window_s:
            closed = (key, window)
            window = None
        if window is None:
            window = self._windows[key] = _Window(now, actor, target)
        if window.written < self.per_window:
            window.written += 1
            write = True
        else:
            if not window.more:
                window.first_more = self.wall()
            window.more += 1
            window.last_more = self.wall()
            write = False
        # Counting is done above, before any await: concurrent requests cannot overrun the limit.
        if closed is not None:
            await self._aggregate(db, *closed)
        if write:
            await audit.append(db, actor, action, target, {**(details or {}), "peer": peer})
        return write

    async def flush(self, db: Database, *, everything: bool = False) -> int:
        """Write the aggregate of every closed window (all windows with ``everything``); return how many."""
        now = self.clock()
        done = [(k, w) for k, w in self._windows.items() if everything or now - w.started >= self.window_s]
        written = 0
        for key, window in done:
            written += await self._aggregate(db, key, window)
            # Only once written: a window whose write failed (database down) is written on a later flush.
            if self._windows.get(key) is window:
                del self._windows[key]
        return written

    async def run(self, db: Database, interval_s: float = 2.0) -> None:
        """Background task: flush closed windows every ``interval_s``; on stop, flush the rest."""
        outage = OutageLog(log, "writing aggregated audit records")
        try:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await self.flush(db)
                except StoreUnavailable as exc:
                    outage.failed(exc)  # the windows stay in memory and are written on recovery
                except Exception:
                    log.exception("could not write aggregated audit records")
                else:
                    outage.succeeded()
        finally:
            with contextlib.suppress(Exception):
                await self.flush(db, everything=True)

    def _key(self, action: str, peer: str) -> tuple[str, str]:
        key = (action, peer)
        if key not in self._windows and len(self._windows) >= MAX_PEERS:
            return (action, OTHERS)
        return key

    async def _aggregate(self, db: Database, key: tuple[str, str], window: _Window) -> int:
        if not window.more:
            return 0
        action, peer = key
        span = "minute" if self.window_s == 60 else f"{self.window_s:g} s"
        source = "other addresses" if peer == OTHERS else peer
        await audit.append(db, window.actor, action, window.target, {
            "aggregate": True, "more": window.more, "peer": peer, "window_s": self.window_s,
            "first": window.first_more, "last": window.last_more,
            "summary": f"{window.more} more from {source} in the last {span}"})
        return 1


@dataclass
class RefusalLimiter:
    """Refusals per peer in a sliding window; past ``limit`` the peer is answered 429 at once.

    A request *reserves* its place before it is looked at (:meth:`reserve`) and gives it back
    only when it succeeds (:meth:`release`): parallel requests count while they are processed,
    so a burst cannot all pass the check before the first refusal is counted.
    """

    limit: int = 10
    window_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    #: With the table full, a new peer is let through untracked (0, no place taken) for a shared limit behind
    #: this one to decide (recovery's database count), instead of sharing the ``*`` bucket with every other
    #: newcomer — where one peer filling the table could lock everyone else out.
    overflow_passes: bool = False
    max_peers: int = MAX_PEERS
    _hits: dict[str, deque[float]] = field(default_factory=dict)

    def reserve(self, peer: str) -> float:
        """0 and a place taken when ``peer`` (IPv6 by its /64) is under the limit; else the seconds until it is.
        0 and no place taken for a new peer while the table is full, when ``overflow_passes``."""
        key = self._key(address_key(peer))
        if key is None:
            return 0.0
        hits = self._recent(key)
        if len(hits) >= self.limit:
            return max(0.001, self.window_s - (self.clock() - hits[0]))
        hits.append(self.clock())
        self._hits[key] = hits
        return 0.0

    def release(self, peer: str) -> None:
        """The request succeeded: it was not a refusal."""
        key = address_key(peer)
        hits = self._hits.get(key if key in self._hits or self.overflow_passes else OTHERS)
        if hits:
            hits.pop()

    def _key(self, peer: str) -> str | None:
        if peer in self._hits or len(self._hits) < self.max_peers:
            return peer
        now = self.clock()
        for idle in [p for p, h in self._hits.items() if not h or now - h[-1] >= self.window_s]:
            del self._hits[idle]
        if len(self._hits) < self.max_peers:
            return peer
        return None if self.overflow_passes else OTHERS

    def _recent(self, key: str) -> deque[float]:
        hits = self._hits.get(key, deque())
        now = self.clock()
        while hits and now - hits[0] >= self.window_s:
            hits.popleft()
        return hits
