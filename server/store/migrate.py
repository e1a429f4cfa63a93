"""Versioned schema migrations, and the compatibility contract of rolling upgrades.

Each module ``migrations/NNNN_name.py`` defines ``VERSION: int`` and ``STATEMENTS: list[str]``
(``{id_pk}``, ``{real}``, ``{bigint}``, ``{blob}`` are replaced per dialect). Applied in order,
each in its own transaction, recorded in ``schema_migrations``; recorded versions this code does
not know (a newer node migrated) are ignored.

The contract (README "Rolling upgrades"): within a release migrations only *expand* — add tables,
columns with defaults, indexes — so the previous release's code runs on the new schema while old
and new nodes serve side by side. A destructive change (drop, rename, retype) takes two releases:
the first stops using the thing, the second removes it. A migration that does drop, rename or
retype declares ``SAFE_BECAUSE: str`` (tests/test_migrations_contract.py refuses one that does
not); one that breaks older code also declares ``OLDEST_CODE: int``, the newest migration the
oldest code that still runs on it knows. That is recorded in ``schema_compat`` (migration 25), and
a node whose code knows less refuses to start (:class:`SchemaTooNew`) instead of misreading it.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from dataclasses import dataclass

from . import migrations as migrations_pkg
from .database import DIALECT_TOKENS, Database, Transaction

log = logging.getLogger(__name__)


#: The migration that made ``schema_compat``: markers can only be written by later ones.
COMPAT_TABLE_VERSION = 25


class SchemaTooNew(RuntimeError):
    """The database was migrated by code this node's code cannot run beside (a newer ``schema_compat`` marker)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: list[str]
    #: Why a drop/rename/retype here cannot break the code running beside it ("" = it has none).
    safe_because: str = ""
    #: Breaks older code: the newest migration the oldest code still able to run on it knows (None = breaks nothing).
    oldest_code: int | None = None


def discover() -> list[Migration]:
    found: list[Migration] = []
    for info in pkgutil.iter_modules(migrations_pkg.__path__):
        module = importlib.import_module(f"{migrations_pkg.__name__}.{info.name}")
        oldest = getattr(module, "OLDEST_CODE", None)
        found.append(Migration(int(module.VERSION), info.name, list(module.STATEMENTS),
                               str(getattr(module, "SAFE_BECAUSE", "")), None if oldest is None else int(oldest)))
    found.sort(key=lambda m: m.version)
    validate(found)
    return found


def validate(found: list[Migration]) -> None:
    """RuntimeError for duplicate versions, or an OLDEST_CODE that could not be recorded or makes no sense."""
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    for migration in found:
        if migration.oldest_code is not None and not (
                migration.version > COMPAT_TABLE_VERSION and migration.oldest_code <= migration.version):
            raise RuntimeError(f"{migration.name}: OLDEST_CODE needs a version after {COMPAT_TABLE_VERSION} and "
                               "at most its own")


#: PostgreSQL advisory-lock key ("HLMIGRAT") that serialises the migrations of nodes starting together.
MIGRATION_LOCK_KEY = 0x484C4D4947524154


async def _serialise(db: Database, tx: Transaction) -> None:
    """Hold the migration lock until ``tx`` ends (PostgreSQL; SQLite's writers are serialised already).

    Without it, nodes started together on a fresh database race on the same DDL and all but one
    fail ("duplicate key … pg_type_typname_nsp_index", "relation … already exists").
    """
    if db.dialect == "postgresql":
        await tx.fetchone("SELECT pg_advisory_xact_lock(?) AS locked", (MIGRATION_LOCK_KEY,))


async def check_compatible(db: Database, applied: set[int], known: list[Migration]) -> None:
    """SchemaTooNew when a migration this code does not know recorded that code as old as this cannot run."""
    newest_known = max((m.version for m in known), default=0)
    unknown = sorted(applied - {m.version for m in known})
    if not unknown:
        return
    if COMPAT_TABLE_VERSION in applied:
        row = await db.fetchone("SELECT version, oldest_code, reason FROM schema_compat "
                                "ORDER BY oldest_code DESC, version DESC LIMIT 1")
        if row is not None and int(row["oldest_code"]) > newest_known:
            raise SchemaTooNew(
                f"this node's code is older than the database allows: migration {row['version']} ({row['reason']}) "
                f"needs code that knows migration {row['oldest_code']} or later, and this code knows migrations up "
                f"to {newest_known}; upgrade this node to the release the other nodes run")
    log.warning("the database has migrations this code does not know (a newer node migrated it); running beside "
                "it as the rolling-upgrade contract allows", extra={"unknown_versions": unknown})


async def migrate(db: Database, migrations: list[Migration] | None = None) -> list[int]:
    """Apply every migration not yet recorded (all of ``migrations``: discover()); return the versions applied."""
    known = discover() if migrations is None else migrations
    async with db.transaction() as tx:
        await _serialise(db, tx)
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
        )
    applied = {r["version"] for r in await db.fetchall("SELECT version FROM schema_migrations")}
    await check_compatible(db, applied, known)
    tokens = DIALECT_TOKENS[db.dialect]
    done: list[int] = []
    for migration in known:
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
            if migration.oldest_code is not None:
                await tx.execute("INSERT INTO schema_compat (version, oldest_code, reason) VALUES (?, ?, ?)",
                                 (migration.version, migration.oldest_code, migration.safe_because or migration.name))
        log.info("applied migration %s", migration.name)
        done.append(migration.version)
    return done
