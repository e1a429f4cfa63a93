"""The authority's shared part is read once for many devices (server/authority/snapshot.py): a herd of
connects or the pushes of one change make one read; a change invalidates it before its pushes are built,
and a read that began before the change is never kept."""

from __future__ import annotations

import asyncio
from typing import Any

from server.authority import snapshot
from server.store import Database


class _Counting:
    """The database, counting statements; ``hold`` makes the next read wait until set."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.statements = 0
        self.hold: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def fetchall(self, sql: str, params: Any = ()) -> Any:
        self.statements += 1
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.entered.set()
            await hold.wait()
        return await self._db.fetchall(sql, params)

    async def fetchone(self, sql: str, params: Any = ()) -> Any:
        self.statements += 1
        return await self._db.fetchone(sql, params)


async def test_a_herd_of_devices_makes_one_read_and_a_change_makes_one_more(db: Database) -> None:
    counting = _Counting(db)
    cache = snapshot.SnapshotCache(max_age_s=60)
    got = await asyncio.gather(*(cache.get(counting) for _ in range(200)))  # type: ignore[arg-type]
    assert cache.reads == 1 and all(g is got[0] for g in got)
    per_read = counting.statements
    assert per_read <= 6
    cache.invalidate()
    await asyncio.gather(*(cache.get(counting) for _ in range(200)))  # type: ignore[arg-type]
    assert cache.reads == 2 and counting.statements == 2 * per_read


async def test_a_read_that_began_before_a_change_is_not_kept(db: Database) -> None:
    counting = _Counting(db)
    cache = snapshot.SnapshotCache(max_age_s=60)
    counting.hold = asyncio.Event()
    hold = counting.hold
    first = asyncio.create_task(cache.get(counting))  # type: ignore[arg-type]
    await asyncio.wait_for(counting.entered.wait(), 5)
    cache.invalidate()  # the change lands while the read is under way
    hold.set()
    await first
    await cache.get(counting)  # type: ignore[arg-type]
    assert cache.reads == 2  # the stale read served its own caller only


async def test_a_snapshot_is_read_again_after_its_age(db: Database) -> None:
    cache = snapshot.SnapshotCache(max_age_s=0.0)
    await cache.get(db)
    await cache.get(db)
    assert cache.reads == 2
