"""SQLite backend (WAL): one connection on one worker thread, so the event loop never blocks.

The database holds password hashes, TOTP secrets and the audit log, so it is private to the
server's user: the file is created 0600 before SQLite opens it (SQLite gives its ``-wal`` and
``-shm`` files the database file's mode), an older install's readable file is narrowed to 0600,
and a missing directory is created 0700. An existing directory is left as it is (it may be
shared); the server makes its own data directory 0700 at start.

I/O, disk-full, lock-timeout and cannot-open errors leave this module as
:class:`~server.store.errors.StoreUnavailable`; other sqlite3 errors (constraints, SQL) pass through.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from .database import Params, Row, Transaction
from .errors import translated

T = TypeVar("T")

#: Primary result codes meaning "the database cannot answer now" (https://sqlite.org/rescode.html):
#: BUSY, LOCKED (after busy_timeout), NOMEM, READONLY, IOERR, FULL (disk full), CANTOPEN, PROTOCOL.
UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF in UNAVAILABLE_CODES
    return isinstance(exc, OSError)  # creating or narrowing the file (permissions, disk full)


class _SqliteExecutor:
    dialect = "sqlite"

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def execute(self, sql: str, params: Params = ()) -> int:
        count: int = await self._db._call(_execute, sql, params)
        return count

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._db._call(_executemany, sql, list(rows))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = await self._db._call(_fetchone, sql, params)
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        rows: list[Row] = await self._db._call(_fetchall, sql, params)
        return rows


class SqliteDatabase(_SqliteExecutor):
    """Statements outside a transaction autocommit; ``transaction()`` holds the lock throughout."""

    def __init__(self, url: str, conn: sqlite3.Connection, pool: ThreadPoolExecutor) -> None:
        super().__init__(self)
        self.url = url
        self._conn = conn
        self._pool = pool
        self._lock = asyncio.Lock()
        self._in_tx: asyncio.Task[Any] | None = None

    @classmethod
    async def connect(cls, url: str) -> SqliteDatabase:
        path = url.removeprefix("sqlite:///")
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        try:
            with translated(is_unavailable):
                if path != ":memory:":
                    _private_file(Path(path))
                conn = await asyncio.get_running_loop().run_in_executor(pool, _open, path)
        except BaseException:
            pool.shutdown(wait=False)
            raise
        return cls(url, conn, pool)

    async def _call(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        with translated(is_unavailable):
            if self._in_tx is not None and self._in_tx is asyncio.current_task():
                return await loop.run_in_executor(self._pool, partial(fn, self._conn, *args))
            async with self._lock:
                return await loop.run_in_executor(self._pool, partial(fn, self._conn, *args))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        with translated(is_unavailable):
            async with self._transaction() as tx:
                yield tx

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Transaction]:
        loop = asyncio.get_running_loop()
        async with self._lock:
            self._in_tx = asyncio.current_task()
            try:
                await loop.run_in_executor(self._pool, self._conn.execute, "BEGIN IMMEDIATE")
                try:
                    yield self
                except BaseException:
                    await loop.run_in_executor(self._pool, self._conn.rollback)
                    raise
                await loop.run_in_executor(self._pool, self._conn.commit)
            finally:
                self._in_tx = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._lock:
            await loop.run_in_executor(self._pool, self._conn.close)
        self._pool.shutdown(wait=True)


def _private_file(path: Path) -> None:
    """Create the database file (and a missing directory) private; narrow an existing one to 0600."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for companion in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if companion.exists() and companion.stat().st_uid == os.geteuid():
            os.chmod(companion, 0o600)


def _open(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _execute(conn: sqlite3.Connection, sql: str, params: Params) -> int:
    return conn.execute(sql, tuple(params)).rowcount


def _executemany(conn: sqlite3.Connection, sql: str, rows: list[Params]) -> None:
    conn.executemany(sql, [tuple(r) for r in rows])


def _fetchone(conn: sqlite3.Connection, sql: str, params: Params) -> Row | None:
    row = conn.execute(sql, tuple(params)).fetchone()
    return dict(row) if row is not None else None


def _fetchall(conn: sqlite3.Connection, sql: str, params: Params) -> list[Row]:
    return [dict(r) for r in conn.execute(sql, tuple(params)).fetchall()]
