"""Append-only, hash-chained audit log.

Each record's hash covers its own fields and the previous record's hash, so altering or
removing any row breaks the chain from that point; :func:`verify_chain` finds the first
broken link. Appends serialize on the chain head (``SELECT … ORDER BY seq DESC`` inside
the write transaction; SQLite's BEGIN IMMEDIATE and PostgreSQL's advisory lock).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from .store import Database, Row, Transaction

GENESIS = "0" * 64


def record_hash(prev_hash: str, seq: int, ts: float, actor: str, action: str, target: str, details: str) -> str:
    body = json.dumps([prev_hash, seq, repr(ts), actor, action, target, details], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


async def append_in(
    tx: Transaction, actor: str, action: str, target: str = "", details: dict[str, Any] | None = None
) -> int:
    """Append one record inside an open transaction; return its sequence number."""
    # NUL (e.g. in a login name) as U+FFFD before hashing: PostgreSQL text cannot store it, and
    # the hash must cover what is stored on either engine.
    actor, action, target = (v.replace("\x00", "\ufffd") for v in (actor, action, target))
    if tx.dialect == "postgresql":
        await tx.execute("SELECT pg_advisory_xact_lock(4242)")
    head = await tx.fetchone("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq = (head["seq"] + 1) if head else 1
    prev = head["hash"] if head else GENESIS
    ts = time.time()
    body = json.dumps(details or {}, sort_keys=True, separators=(",", ":"), default=str)
    digest = record_hash(prev, seq, ts, actor, action, target, body)
    await tx.execute(
        "INSERT INTO audit_log (seq, ts, actor, action, target, details, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, ts, actor, action, target, body, prev, digest),
    )
    return seq


async def append(db: Database, actor: str, action: str, target: str = "", details: dict[str, Any] | None = None) -> int:
    """Append one record in its own transaction."""
    async with db.transaction() as tx:
        return await append_in(tx, actor, action, target, details)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    records: int
    first_bad_seq: int | None = None
    problem: str = ""


async def verify_chain(db: Database, *, batch: int = 5000) -> ChainReport:
    """Walk the whole log; report the first record whose link or hash does not hold."""
    prev_hash, expected_seq, count = GENESIS, 1, 0
    while True:
        rows: list[Row] = await db.fetchall(
            "SELECT seq, ts, actor, action, target, details, prev_hash, hash FROM audit_log"
            " WHERE seq >= ? ORDER BY seq LIMIT ?",
            (expected_seq, batch),
        )
        if not rows:
            return ChainReport(True, count)
        for row in rows:
            if row["seq"] != expected_seq:
                return ChainReport(False, count, expected_seq, f"record {expected_seq} is missing")
            if row["prev_hash"] != prev_hash:
                return ChainReport(False, count, row["seq"], "link to the previous record is broken")
            digest = record_hash(
                row["prev_hash"], row["seq"], row["ts"], row["actor"], row["action"], row["target"], row["details"]
            )
            if digest != row["hash"]:
                return ChainReport(False, count, row["seq"], "record content does not match its hash")
            prev_hash, expected_seq, count = row["hash"], expected_seq + 1, count + 1


async def recent(db: Database, *, limit: int = 100, action: str | None = None, target: str | None = None) -> list[Row]:
    sql = "SELECT seq, ts, actor, action, target, details FROM audit_log"
    where: list[str] = []
    params: list[Any] = []
    if action:
        where.append("LOWER(action) LIKE ?")  # case-blind on both engines (PostgreSQL's LIKE is not)
        params.append(action.replace("*", "%").lower())
    if target:
        where.append("target = ?")
        params.append(target)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC LIMIT ?"
    params.append(limit)
    return await db.fetchall(sql, params)
