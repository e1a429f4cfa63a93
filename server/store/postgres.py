"""PostgreSQL backend (asyncpg), selected by ``database_url = "postgresql://…"``.

Connection, shutdown and out-of-resources errors leave this module as
:class:`~server.store.errors.StoreUnavailable`; other asyncpg errors pass through.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import asyncpg

from .database import Params, Row, Transaction
from .errors import translated

_PLACEHOLDER = re.compile(r"\?")


@lru_cache(maxsize=1024)
def to_pg(sql: str) -> str:
    """Rewrite ``?`` placeholders to ``$1, $2…`` (our SQL never has ``?`` inside literals)."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


def _text_safe(params: Params) -> tuple[Any, ...]:
    """PostgreSQL text cannot hold NUL: store it as U+FFFD (SQLite keeps it), never fail the write.

    Agent-supplied text (task output, hostnames) and login names may contain NUL; without this a
    task result or a login attempt would fail with a database error on PostgreSQL only.
    """
    return tuple(p.replace("\x00", "\ufffd") if isinstance(p, str) and "\x00" in p else p for p in params)


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot answer now (down, restarting, unreachable, full), as opposed to a bad statement."""
    if isinstance(exc, OSError | TimeoutError):  # refused, reset, unreachable; connect timeout
        return True
    if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InsufficientResourcesError):
        return True  # class 08 (connection), class 53 (disk full, out of memory, too many connections)
    if isinstance(exc, asyncpg.OperatorInterventionError):  # class 57: admin/crash shutdown, cannot connect now
        return not isinstance(exc, asyncpg.QueryCanceledError)  # ... but a statement timeout is the statement's
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):  # a standby after failover
        return True
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


def _mapped() -> contextlib.AbstractContextManager[None]:
    return translated(is_unavailable)


def _rowcount(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class _PgExecutor:
    dialect = "postgresql"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        with _mapped():
            return _rowcount(await self._conn.execute(to_pg(sql), *_text_safe(params)))

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        with _mapped():
            await self._conn.executemany(to_pg(sql), [_text_safe(r) for r in rows])

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        with _mapped():
            row = await self._conn.fetchrow(to_pg(sql), *_text_safe(params))
        return dict(row) if row is not None else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        with _mapped():
            return [dict(r) for r in await self._conn.fetch(to_pg(sql), *_text_safe(params))]


class PostgresDatabase(_PgExecutor):
    def __init__(self, url: str, pool: Any) -> None:
        super().__init__(pool)
        self.url = url
        self._pool = pool

    @classmethod
    async def connect(cls, url: str) -> PostgresDatabase:
        with _mapped():
            pool = await asyncpg.create_pool(url, min_size=1, max_size=10)
        return cls(url, pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        with _mapped():
            async with self._pool.acquire() as conn, conn.transaction():
                yield _PgExecutor(conn)

    async def close(self) -> None:
        await self._pool.close()
