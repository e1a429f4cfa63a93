"""PostgreSQL backend (asyncpg), selected by ``database_url = "postgresql://…"``.

Connection, shutdown and out-of-resources errors leave this module as
:class:`~server.store.errors.StoreUnavailable`; other asyncpg errors pass through.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, TypeVar

import asyncpg

from .database import Params, Row, Transaction
from .errors import translated

_PLACEHOLDER = re.compile(r"\?")
_T = TypeVar("_T")


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
    """Statements on one connection (a transaction's) or on the pool (each on a connection of its own)."""

    dialect = "postgresql"

    def __init__(self, conn: Any, pool: _CleanPool | None = None) -> None:
        self._conn = conn
        self._clean_pool = pool

    async def _run(self, op: Callable[[Any], Awaitable[_T]]) -> _T:
        with _mapped():
            if self._clean_pool is None:  # inside a transaction: its connection
                return await op(self._conn)
            return await self._clean_pool.run(op)

    async def execute(self, sql: str, params: Params = ()) -> int:
        status: str = await self._run(lambda conn: conn.execute(to_pg(sql), *_text_safe(params)))
        return _rowcount(status)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        safe = [_text_safe(r) for r in rows]
        await self._run(lambda conn: conn.executemany(to_pg(sql), safe))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row = await self._run(lambda conn: conn.fetchrow(to_pg(sql), *_text_safe(params)))
        return dict(row) if row is not None else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        rows = await self._run(lambda conn: conn.fetch(to_pg(sql), *_text_safe(params)))
        return [dict(r) for r in rows]


def _refused_before_sending(exc: BaseException) -> bool:
    """asyncpg refused to start the statement on a connection still busy with something else (here: a shutdown
    notice the server sent while the connection sat idle in the pool) — checked before anything is sent."""
    return isinstance(exc, asyncpg.InternalClientError | asyncpg.InterfaceError) and "another operation" in str(exc)


class _CleanPool:
    """asyncpg's pool, releasing a connection without the reset query when its last use ended cleanly.

    asyncpg resets every released connection with ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` — a round trip per release, about half the round trips of an agent's connect, which is
    what bounds how fast a node takes back a killed node's agents (issue 20). Nothing here leaves session
    state behind (advisory locks are transaction-scoped, no LISTEN, SET or cursor outside a transaction;
    the pool still rolls back an open transaction). A use that ended in anything but the server's answer to
    the statement (cancelled, timed out, connection lost, the server shutting down) may leave the
    connection mid-operation: that one gets the full reset, which fails on such a connection, and the pool
    then closes it. A shutdown notice that reaches a connection idle in the pool is caught when the next
    statement is refused before anything is sent (:meth:`run` takes another connection). Connections are
    told apart by their server process id (public on both the pool's proxy and the raw connection)."""

    def __init__(self) -> None:
        self.pool: Any = None
        #: Server pids of connections whose last use ended uncleanly: reset in full on release.
        self._suspect: set[int] = set()
        self.resets_skipped = 0

    async def create(self, url: str, *, min_size: int, max_size: int) -> None:
        self.pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, reset=self._reset)

    def get_size(self) -> int:
        return int(self.pool.get_size())

    def get_idle_size(self) -> int:
        return int(self.pool.get_idle_size())

    async def _reset(self, conn: Any) -> None:
        pid = conn.get_server_pid()
        if pid in self._suspect:
            self._suspect.discard(pid)
            await conn.reset()  # raises on a connection mid-operation: the pool then terminates it
            return
        self.resets_skipped += 1

    async def run(self, op: Callable[[Any], Awaitable[_T]]) -> _T:
        """``op`` on a pooled connection; once more on another when asyncpg refused to start it on the first
        (nothing was sent: running it again cannot run it twice). Refused there too, every idle connection got
        the server's shutdown notice: the database is going down (:class:`StoreUnavailable`)."""
        try:
            async with self.acquire() as conn:
                return await op(conn)
        except Exception as exc:
            if not _refused_before_sending(exc):
                raise
        with translated(_refused_before_sending):
            async with self.acquire() as conn:  # the first one was reset in full on release, and so closed
                return await op(conn)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async with self.pool.acquire() as conn:
            pid = conn.get_server_pid()  # now: a proxy whose connection was closed under it answers no more
            try:
                yield conn
            except BaseException as exc:
                # Only the server's answer to the statement (constraint, SQL error, statement timeout) leaves
                # the connection idle; a shutdown notice, a lost or cancelled connection may not.
                if not isinstance(exc, asyncpg.PostgresError) or is_unavailable(exc):
                    self._suspect.add(pid)
                raise


class PostgresDatabase(_PgExecutor):
    def __init__(self, url: str, pool: _CleanPool) -> None:
        super().__init__(None, pool)
        self.url = url
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, pool_size: int = 10) -> PostgresDatabase:
        pool = _CleanPool()
        with _mapped():
            await pool.create(url, min_size=1, max_size=pool_size)
        return cls(url, pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        with _mapped():
            async with self._pool.acquire() as conn, conn.transaction():
                yield _PgExecutor(conn)

    async def close(self) -> None:
        await self._pool.pool.close()
