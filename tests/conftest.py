"""Shared fixtures (kept small and generic)."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from server import devices
from server.store import Database, open_database


@pytest.fixture
def pg_url() -> str:
    """PostgreSQL URL from HELPLINE_TEST_PG_URL; skipped locally when unset, a failure under CI."""
    url = os.environ.get("HELPLINE_TEST_PG_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("HELPLINE_TEST_PG_URL is not set under CI: PostgreSQL tests cannot run")
        pytest.skip("HELPLINE_TEST_PG_URL not set")
    return url


@pytest.fixture(scope="session", autouse=True)
def _drop_e2e_pg_schemas() -> Iterator[None]:
    """With HELPLINE_TEST_STORE=postgresql, drop the per-data-dir schemas the harness made."""
    yield
    from tests import pg_store

    pg_store.drop_all()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A freshly migrated database: a new SQLite file, or a new PostgreSQL schema per test."""
    if request.param == "sqlite":
        database = await open_database(f"sqlite:///{tmp_path / 'store.db'}")
        yield database
        await database.close()
        return
    url = request.getfixturevalue("pg_url")
    schema = f"t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(url)
    await admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    try:
        database = await open_database(f"{url}{sep}search_path={schema}")
        try:
            # Open a few pool connections up front, so concurrent transactions really overlap
            # (otherwise the first often finishes while the second is still connecting).
            await asyncio.gather(*(database.fetchone("SELECT pg_sleep(0.05) AS x") for _ in range(4)))
            yield database
        finally:
            await database.close()
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


async def add_device(db: Database, device_id: str = "dev-1", group: str = "lab") -> str:
    """Register a device directly in the store (for store-level tests)."""
    async with db.transaction() as tx:
        await devices.ensure_group(tx, group)
        await devices.register(tx, device_id, group, "serial-" + device_id, time.time() + 86400)
    return device_id
