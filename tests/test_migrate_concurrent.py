"""Nodes that start together on one PostgreSQL: their migrations run one after another, each once."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg

from server.store import open_database
from server.store.migrate import discover


async def test_nodes_starting_together_migrate_once(pg_url: str) -> None:
    """Four servers' stores opened at the same instant on a fresh schema all start, and every migration is
    recorded once (without the advisory lock, concurrent DDL fails with "already exists")."""
    schema = f"t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pg_url else "?"
    url = f"{pg_url}{sep}search_path={schema}"
    try:
        for _attempt in range(3):  # three fresh races: one lucky interleaving proves little
            results = await asyncio.gather(*(open_database(url) for _ in range(4)), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            for r in results:
                if not isinstance(r, BaseException):
                    await r.close()
            assert not errors, errors
            rows = await admin.fetch(f"SELECT version FROM {schema}.schema_migrations ORDER BY version")
            assert [r["version"] for r in rows] == [m.version for m in discover()]
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
            await admin.execute(f"CREATE SCHEMA {schema}")
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()
