"""Versioned schema migrations.

Each module ``migrations/NNNN_name.py`` defines ``VERSION: int`` and ``STATEMENTS: list[str]``
(``{id_pk}``, ``{real}``, ``{bigint}``, ``{blob}`` are replaced per dialect). Applied in order,
each in its own transaction, recorded in ``schema_migrations``.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from dataclasses import dataclass

from . import migrations as migrations_pkg
from .database import DIALECT_TOKENS, Database, Transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: list[str]


def discover() -> list[Migration]:
    found: list[Migration] = []
    for info in pkgutil.iter_modules(migrations_pkg.__path__):
        module = importlib.import_module(f"{migrations_pkg.__name__}.{info.name}")
        found.append(Migration(int(module.VERSION), info.name, list(module.STATEMENTS)))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


#: PostgreSQL advisory-lock key ("HLMIGRAT") that serialises the migrations of nodes starting together.
MIGRATION_LOCK_KEY = 0x484C4D4947524154


async def _serialise(db: Database, tx: Transaction) -> None:
    """Hold the migration lock until ``tx`` ends (PostgreSQL; SQLite's writers are serialised already).

    Without it, nodes started together on a fresh database race on the same DDL and all but one
    fail ("duplicate key … pg_type_typname_nsp_index", "relation … already exists").
    """
    if db.dialect == "postgresql":
        await tx.fetchone("SELECT pg_advisory_xact_lock(?) AS locked", (MIGRATION_LOCK_KEY,))


async def migrate(db: Database) -> list[int]:
    """Apply every migration not yet recorded; return the versions applied."""
    async with db.transaction() as tx:
        await _serialise(db, tx)
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
        )
    applied = {r["version"] for r in await db.fetchall("SELECT version FROM schema_migrations")}
    tokens = DIALECT_TOKENS[db.dialect]
    done: list[int] = []
    for migration in discover():
        if migration.version in applied:
            continue
        async with db.transaction() as tx:
            await _serialise(db, tx)
            # Re-check inside the transaction, under the lock: another node may have migrated meanwhile.
            if await tx.fetchone("SELECT 1 AS x FROM schema_migrations WHERE version = ?", (migration.version,)):
                continue
            for statement in migration.statements:
                await tx.execute(statement.format(**tokens))
            await tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (migration.version, migration.name)
            )
        log.info("applied migration %s", migration.name)
        done.append(migration.version)
    return done
