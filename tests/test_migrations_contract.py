"""The rolling-upgrade contract of migrations: expand-only unless declared, and the ``schema_compat`` marker.

README "Rolling upgrades": an old and a new node serve side by side, so a migration may not drop,
rename or retype what the previous release reads unless it says why that is safe; one that does
break older code records the oldest code that still runs, and older nodes refuse to start.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from server.store import Database, open_database
from server.store.migrate import Migration, SchemaTooNew, discover, migrate, validate
from tests.harness import make_pki

#: Statements that remove or change what older code may read: drop, rename, retype.
DESTRUCTIVE = re.compile(
    r"\bDROP\s+(TABLE|COLUMN|INDEX|VIEW|TRIGGER|CONSTRAINT|TYPE|SCHEMA)\b|\bRENAME\b"
    r"|\bALTER\s+(TABLE\s+\S+\s+)?(ALTER\s+)?COLUMN\s+\S+\s+(SET\s+DATA\s+)?TYPE\b"
    r"|\bALTER\s+COLUMN\s+\S+\s+SET\s+NOT\s+NULL\b",
    re.IGNORECASE)


def destructive(statement: str) -> list[str]:
    return [m.group(0) for m in DESTRUCTIVE.finditer(statement)]


def test_the_scanner_sees_drops_renames_and_retypes() -> None:
    """What the contract forbids is found; additions (and names that merely contain the words) are not."""
    for bad in ("DROP TABLE grants", "ALTER TABLE tasks DROP COLUMN grant_id", "drop index x",
                "ALTER TABLE a RENAME TO b", "ALTER TABLE a RENAME COLUMN x TO y",
                "ALTER TABLE a ALTER COLUMN x TYPE BIGINT", "ALTER TABLE a ALTER COLUMN x SET DATA TYPE TEXT",
                "ALTER TABLE a ALTER COLUMN x SET NOT NULL"):
        assert destructive(bad), bad
    for fine in ("CREATE TABLE dropped_things (renamed_at REAL, type TEXT)",
                 "ALTER TABLE a ADD COLUMN drop_reason TEXT NOT NULL DEFAULT ''",
                 "CREATE INDEX x ON a (type)", "UPDATE a SET type = 'x'"):
        assert not destructive(fine), fine


def test_migrations_are_expand_only_unless_they_say_why() -> None:
    """Every migration that drops, renames or retypes declares SAFE_BECAUSE (server/store/migrate.py)."""
    undeclared = {m.name: found for m in discover()
                  for found in [[hit for s in m.statements for hit in destructive(s)]]
                  if found and not m.safe_because.strip()}
    assert not undeclared, (f"destructive migrations without SAFE_BECAUSE: {undeclared}; the previous release "
                            "still reads what they remove — split the change over two releases, or say why it is "
                            "safe (and set OLDEST_CODE if it breaks older code)")


def _future(version: int, *, oldest_code: int | None) -> Migration:
    return Migration(version, f"m{version}_future", [f"CREATE TABLE future_{version} (x INTEGER)"],
                     "a test's future release", oldest_code)


async def test_a_future_expand_only_migration_leaves_older_code_running(db: Database) -> None:
    """Versions this code does not know, without a marker: the old node starts (the rolling-upgrade case)."""
    await migrate(db, [*discover(), _future(9001, oldest_code=None)])
    assert await migrate(db) == []
    assert await db.fetchone("SELECT version FROM schema_compat") is None


async def test_code_older_than_the_marker_refuses_to_start(db: Database) -> None:
    """A future migration that breaks older code records the oldest code that runs; this code then refuses."""
    await migrate(db, [*discover(), _future(9001, oldest_code=9001)])
    row = await db.fetchone("SELECT version, oldest_code FROM schema_compat")
    assert row == {"version": 9001, "oldest_code": 9001}
    with pytest.raises(SchemaTooNew, match=r"needs code that knows migration 9001 or later.*upgrade this node"):
        await migrate(db)
    # Code that knows 9001 runs.
    assert await migrate(db, [*discover(), _future(9001, oldest_code=9001)]) == []


def test_a_marker_must_come_after_the_table_that_holds_it() -> None:
    """OLDEST_CODE on a migration before schema_compat existed, or naming a later version, is a bug."""
    for bad in (Migration(24, "m24", [], "", 24), Migration(9001, "m9001", [], "", 9002)):
        with pytest.raises(RuntimeError, match="OLDEST_CODE"):
            validate([bad])


async def test_the_server_refuses_with_the_message(tmp_path: Path) -> None:
    """``helpline server`` on a database marked by a future release exits non-zero saying to upgrade."""
    data = tmp_path / "data"
    make_pki(data / "pki")
    db = await open_database(f"sqlite:///{data / 'helpline.db'}")
    try:
        await migrate(db, [*discover(), _future(9001, oldest_code=9001)])
    finally:
        await db.close()
    result = subprocess.run([sys.executable, "-m", "helpline", "server", "--data", str(data), "--host", "127.0.0.1",
                             "--agent-port", "0", "--console-port", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "older than the database allows" in result.stderr and "upgrade this node" in result.stderr, result.stderr
