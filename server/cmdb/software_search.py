"""Fleet software search: which devices have package X (at version V, or below version Y).

"Below Y" is a range on the ``(name, version_key)`` index (:func:`.versions.key` orders bytes as
dpkg orders versions), so the database returns only the hits. Rows without a key (stored before
migration 13 and not yet back-filled) are fetched too and compared in Python, so the answer is
exact either way. Hits come oldest version first — the index's order, so a page joins and sorts
only its own rows. Measured at 10,000 devices (benchmarks/cmdb_questions.py, 4,669 hits, on a
box at load 10): 437 ms p95 when every row was fetched and compared and sorted by hostname; a
1,000-row page in SQL ~15 ms median; see the README for the benchmark's p95.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from server.store import Database, Row

from . import versions

log = logging.getLogger(__name__)

#: Rows per back-fill batch (one transaction each, so ingest is never held up for long).
BACKFILL_BATCH = 2000


@lru_cache(maxsize=65536)
def version_key(version: str) -> bytes | None:
    """The sortable key of ``version``, None where it cannot be compared at all (then Python decides)."""
    try:
        return versions.key(version)
    except ValueError:
        return None


@lru_cache(maxsize=65536)
def _older(version: str, limit: str) -> bool:
    try:
        return versions.compare(version, limit) < 0
    except ValueError:
        return False


_COLUMNS = ("SELECT s.device_id, d.hostname, d.group_name, s.name, s.version, s.arch, s.source"
            " FROM software s JOIN devices d ON d.id = s.device_id")
#: Oldest first: the index's own order, so a page reads only its rows (hostname order sorted every hit).
_ORDER = " ORDER BY s.version_key, s.version, s.device_id, s.arch"


async def search(db: Database, name: str, *, version: str = "", version_lt: str = "",
                 groups: set[str] | None = None, limit: int | None = None, offset: int = 0
                 ) -> tuple[list[Row], int]:
    """One page of rows (device_id, hostname, group_name, name, version, arch, source), oldest
    version first, and how many there are in all."""
    where = ["s.name = ?"]
    params: list[Any] = [name]
    if version:
        where.append("s.version = ?")
        params.append(version)
    if groups is not None:
        if not groups:
            return [], 0
        where.append(f"d.group_name IN ({', '.join('?' for _ in groups)})")
        params.extend(sorted(groups))
    limit_key = version_key(version_lt) if version_lt else None
    if version_lt:
        unkeyed = limit_key is None or await db.fetchone(
            "SELECT 1 AS x FROM software WHERE name = ? AND version_key IS NULL LIMIT 1", (name,)) is not None
        if unkeyed:  # rows (or a limit) without a key: Python judges those, every row fetched
            sql = f"{_COLUMNS} WHERE {' AND '.join(where)}{_ORDER}"
            if limit_key is not None:
                sql = sql.replace(_ORDER, " AND (s.version_key < ? OR s.version_key IS NULL)" + _ORDER)
            rows = await db.fetchall(sql, [*params, limit_key] if limit_key is not None else params)
            hits = [r for r in rows if _older(r["version"], version_lt)]  # exact for keyed rows too
            hits.sort(key=lambda r: (versions.sort_key(r["version"]), r["device_id"], r["arch"]))
            end = None if limit is None else offset + limit
            return hits[offset:end], len(hits)
        where.append("s.version_key < ?")  # an index range on (name, version_key)
        params.append(limit_key)
    clause = " AND ".join(where)
    join = " JOIN devices d ON d.id = s.device_id" if groups is not None else ""  # rows cascade with devices
    count = await db.fetchone(f"SELECT COUNT(*) AS n FROM software s{join} WHERE {clause}", params)  # noqa: S608
    page = "" if limit is None else " LIMIT ? OFFSET ?"
    rows = await db.fetchall(f"{_COLUMNS} WHERE {clause}{_ORDER}{page}",
                             params if limit is None else [*params, limit, offset])
    return rows, int(count["n"]) if count else 0


async def backfill_keys(db: Database, batch: int = BACKFILL_BATCH) -> int:
    """Fill ``version_key`` where it is missing (rows older than migration 13); returns rows filled."""
    filled = 0
    after: tuple[str, str, str] = ("", "", "")
    while True:
        rows = await db.fetchall(
            "SELECT device_id, name, arch, version FROM software WHERE version_key IS NULL"
            " AND (device_id > ? OR (device_id = ? AND (name > ? OR (name = ? AND arch > ?))))"
            " ORDER BY device_id, name, arch LIMIT ?",
            (after[0], after[0], after[1], after[1], after[2], batch))
        if not rows:
            return filled
        updates = [(version_key(r["version"]), r["device_id"], r["name"], r["arch"]) for r in rows]
        keyed = [u for u in updates if u[0] is not None]
        if keyed:
            async with db.transaction() as tx:
                await tx.executemany("UPDATE software SET version_key = ? WHERE device_id = ? AND name = ?"
                                     " AND arch = ? AND version_key IS NULL", keyed)
        filled += len(keyed)
        last = rows[-1]
        after = (last["device_id"], last["name"], last["arch"])
