"""The PostgreSQL pool skips asyncpg's reset query after a clean use, and never hands on a connection
that a cancelled statement left mid-operation (server/store/postgres.py ``_CleanPool``)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from server.store import StoreUnavailable
from server.store.postgres import PostgresDatabase


async def _database(pg_url: str, size: int) -> PostgresDatabase:
    return await PostgresDatabase.connect(pg_url, pool_size=size)


async def test_clean_statements_and_server_errors_skip_the_reset_query(pg_url: str) -> None:
    db = await _database(pg_url, 1)
    try:
        pool = db._pool
        before = pool.resets_skipped
        for _ in range(5):
            assert await db.fetchone("SELECT 1 AS one") == {"one": 1}
        with pytest.raises(asyncpg.PostgresError):  # the server's answer: the connection is idle again
            await db.execute("SELECT * FROM no_such_table_here")
        async with db.transaction() as tx:
            await tx.execute("SELECT 1")
        assert pool.resets_skipped - before == 7
    finally:
        await db.close()


async def test_a_cancelled_statement_is_reset_in_full_and_the_next_caller_is_not_harmed(pg_url: str) -> None:
    """One connection in the pool: a statement cancelled mid-flight, then ordinary statements on the same pool
    work (a no-op reset handed that connection on: "another operation is in progress")."""
    db = await _database(pg_url, 1)
    try:
        pool = db._pool
        for _ in range(3):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await db.fetchone("SELECT pg_sleep(5) AS slept")
            assert await db.fetchone("SELECT 2 AS two") == {"two": 2}
            async with db.transaction() as tx:
                assert await tx.fetchone("SELECT 3 AS three") == {"three": 3}
        with pytest.raises(TimeoutError):  # cancelled inside a transaction: rolled back, then reset in full
            async with asyncio.timeout(0.2), db.transaction() as tx:
                await tx.execute("CREATE TEMP TABLE pool_probe (x int)")
                await tx.fetchone("SELECT pg_sleep(5) AS slept")
        assert await db.fetchone("SELECT to_regclass('pg_temp.pool_probe') IS NULL AS gone") == {"gone": True}
        assert not pool._suspect  # every suspect connection was reset (or closed) on release
    finally:
        await db.close()


async def test_a_statement_refused_before_sending_is_tried_once_more_then_the_database_is_going_down(
        pg_url: str) -> None:
    """asyncpg refuses to start a statement on a connection holding the server's shutdown notice: the pool tries
    another connection once; refused there too, the database is going down — StoreUnavailable, not a traceback."""
    db = await _database(pg_url, 2)
    refusal = "cannot switch to state 11; another operation (2) is in progress"
    try:
        tries = 0

        async def refused_once(conn: asyncpg.Connection) -> int:
            nonlocal tries
            tries += 1
            if tries == 1:
                raise asyncpg.InternalClientError(refusal)
            return int(await conn.fetchval("SELECT 4"))

        assert await db._pool.run(refused_once) == 4 and tries == 2
        tries = 0

        async def always_refused(conn: asyncpg.Connection) -> int:
            nonlocal tries
            tries += 1
            raise asyncpg.InternalClientError(refusal)

        with pytest.raises(StoreUnavailable, match="another operation"):
            await db._pool.run(always_refused)
        assert tries == 2
        assert await db.fetchone("SELECT 5 AS five") == {"five": 5}  # the pool still works
    finally:
        await db.close()
