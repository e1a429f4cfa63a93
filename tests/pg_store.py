"""Run the end-to-end harness on PostgreSQL: ``HELPLINE_TEST_STORE=postgresql``.

Each server data dir gets its own schema at HELPLINE_TEST_PG_URL (asyncpg passes the
``search_path`` query parameter as a server setting), so a test that restarts a server on the
same data dir finds its data again, and tests never see each other's rows. Schemas are named
``hl_e2e_<pid>_<random>`` and dropped at session end (conftest.py); schemas left by a killed run
(their pid no longer alive) are swept then too. While such a server runs, HELPLINE_DATABASE_URL
points at its schema, so ``helpline admin …`` run by the test (in-process or as a subprocess)
reaches the same database, as it would with that variable set in a deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

_PREFIX = "hl_e2e_"
_schemas: dict[Path, str] = {}
_created: set[str] = set()


def enabled() -> bool:
    """True when HELPLINE_TEST_STORE asks for PostgreSQL (which then needs HELPLINE_TEST_PG_URL)."""
    store = os.environ.get("HELPLINE_TEST_STORE", "sqlite")
    if store not in ("sqlite", "postgresql"):
        raise RuntimeError(f"HELPLINE_TEST_STORE={store!r}: use sqlite or postgresql")
    if store == "postgresql" and not os.environ.get("HELPLINE_TEST_PG_URL"):
        raise RuntimeError("HELPLINE_TEST_STORE=postgresql needs HELPLINE_TEST_PG_URL")
    return store == "postgresql"


def base_url() -> str:
    return os.environ["HELPLINE_TEST_PG_URL"]


def url_for(data_dir: Path) -> str:
    """The database URL for a server on ``data_dir``: the same schema every time for that dir."""
    key = data_dir.resolve()
    schema = _schemas.get(key)
    if schema is None:
        schema = _schemas[key] = f"{_PREFIX}{os.getpid()}_{secrets.token_hex(5)}"
    url = base_url()
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}search_path={schema}"


def _schema_of(url: str) -> str | None:
    match = re.search(r"[?&]search_path=(" + _PREFIX + r"\w+)", url)
    return match.group(1) if match else None


async def ensure_schema(database_url: str) -> None:
    """Create the schema a harness URL names (no-op for SQLite and for schemas made already)."""
    schema = _schema_of(database_url)
    if schema is None or schema in _created:
        return
    conn = await asyncpg.connect(base_url())
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    finally:
        await conn.close()
    _created.add(schema)


@contextlib.contextmanager
def cli_env(database_url: str) -> Iterator[None]:
    """Set HELPLINE_DATABASE_URL to a harness schema's URL for the block (no-op for SQLite)."""
    if _schema_of(database_url) is None:
        yield
        return
    previous = os.environ.get("HELPLINE_DATABASE_URL")
    os.environ["HELPLINE_DATABASE_URL"] = database_url
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HELPLINE_DATABASE_URL", None)
        else:
            os.environ["HELPLINE_DATABASE_URL"] = previous


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _drop(mine: set[str]) -> None:
    conn = await asyncpg.connect(base_url())
    try:
        rows = await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'hl\\_e2e\\_%'")
        for row in rows:
            name: str = row["nspname"]
            pid = name[len(_PREFIX):].split("_", 1)[0]
            if name in mine or (pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid))):
                await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        await conn.close()


def drop_all() -> None:
    """Drop this session's schemas (and stale ones of dead runs); in a thread with its own loop."""
    if not _created:
        return
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_drop(set(_created)))
        except Exception as exc:  # reported below, in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="pg-store-cleanup")
    thread.start()
    thread.join()
    if errors:
        log.error("dropping the e2e PostgreSQL schemas failed: %s", errors[0])
        raise errors[0]
    _created.clear()
