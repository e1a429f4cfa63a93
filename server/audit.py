"""Append-only, hash-chained audit log.

Each record's hash covers its own fields and the previous record's hash, so altering or
removing any row breaks the chain from that point; :func:`verify_chain` finds the first
broken link. Appends serialize on the chain head (``SELECT … ORDER BY seq DESC`` inside
the write transaction; SQLite's BEGIN IMMEDIATE and PostgreSQL's advisory lock).

Removing the *newest* rows leaves a shorter chain that still links, so the head is also kept
outside the database (:mod:`server.audit_anchor`): a database opened with
:func:`attach_anchor` writes the committed head to the anchor file after each
:func:`append`, and :func:`keep_anchored` catches up records appended with
:func:`append_in` inside larger transactions. :func:`verify_chain` given the anchor's head
reports a log that ends before it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.outage import reason

from .audit_anchor import ANCHOR_FILE, AuditAnchor, Head, read_head
from .store import Database, Row, Transaction
from .store.errors import StoreUnavailable

log = logging.getLogger(__name__)

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
    """Append one record in its own transaction, then anchor the committed head."""
    async with db.transaction() as tx:
        seq = await append_in(tx, actor, action, target, details)
    await anchor_head(db)
    for listener in getattr(db, _LISTENERS_ATTR, ()):
        listener(seq)
    return seq


_LISTENERS_ATTR = "_helpline_audit_listeners"


def on_append(db: Database, listener: Callable[[int], None]) -> None:
    """Call ``listener(seq)`` after each :func:`append` on ``db`` (this handle) commits — the SIEM
    stream wakes on it. Records from :func:`append_in` inside larger transactions are not announced:
    a listener also polls."""
    listeners: list[Callable[[int], None]] = getattr(db, _LISTENERS_ATTR, [])
    listeners.append(listener)
    setattr(db, _LISTENERS_ATTR, listeners)


# --- the anchor: the head kept outside the database ------------------------------------------

_ANCHOR_ATTR = "_helpline_audit_anchor"


def anchor_path(data_dir: Path) -> Path:
    return data_dir / ANCHOR_FILE


def attach_anchor(db: Database, path: Path) -> AuditAnchor:
    """Make every :func:`append` on ``db`` (this handle) also advance the anchor file at ``path``."""
    anchor = AuditAnchor(path)
    setattr(db, _ANCHOR_ATTR, anchor)  # travels with this handle: no process-wide registry
    return anchor


def anchor_of(db: Database) -> AuditAnchor | None:
    anchor = getattr(db, _ANCHOR_ATTR, None)
    return anchor if isinstance(anchor, AuditAnchor) else None


async def head(db: Database) -> Head | None:
    """The newest committed record's sequence number and hash."""
    row = await db.fetchone("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    return None if row is None else Head(int(row["seq"]), str(row["hash"]))


async def anchor_head(db: Database) -> None:
    """Write the committed head to ``db``'s anchor (no-op without one). Never fails the caller:
    the record is committed; an anchor left behind only shortens what it protects."""
    anchor = anchor_of(db)
    if anchor is None:
        return
    try:
        current = await head(db)
        if current is not None:
            await asyncio.to_thread(anchor.advance, current)
        if anchor.failing:
            log.warning("the audit anchor advances again", extra={"path": str(anchor.path)})
        anchor.failing = False
    except StoreUnavailable as exc:
        if not anchor.failing:  # once per outage, not once a second; the reason, not a traceback
            log.warning("could not advance the audit anchor (%s); retrying every second", reason(exc),
                        extra={"path": str(anchor.path)})
        anchor.failing = True
    except Exception:
        if not anchor.failing:
            log.exception("could not advance the audit anchor", extra={"path": str(anchor.path)})
        anchor.failing = True


async def keep_anchored(db: Database, interval_s: float = 1.0) -> None:
    """Background task: anchor heads committed by :func:`append_in` (or by other nodes)."""
    try:
        while True:
            await anchor_head(db)
            await asyncio.sleep(interval_s)
    finally:
        await anchor_head(db)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    records: int
    first_bad_seq: int | None = None
    problem: str = ""
    #: The anchor's head the log was checked against (None: no anchor given or none written yet).
    anchor: Head | None = None


async def verify_chain(db: Database, *, batch: int = 5000, anchor: Head | None = None) -> ChainReport:
    """Walk the whole log; report the first record whose link or hash does not hold, then a log
    that ends before ``anchor`` (its newest rows deleted) or differs from it at its sequence."""
    prev_hash, expected_seq, count = GENESIS, 1, 0
    while True:
        rows: list[Row] = await db.fetchall(
            "SELECT seq, ts, actor, action, target, details, prev_hash, hash FROM audit_log"
            " WHERE seq >= ? ORDER BY seq LIMIT ?",
            (expected_seq, batch),
        )
        if not rows:
            return _against_anchor(count, anchor)
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
            if anchor is not None and row["seq"] == anchor.seq and row["hash"] != anchor.hash:
                return ChainReport(False, count, row["seq"], f"record {anchor.seq} differs from the anchor: the log "
                                   "was rewritten at or before it", anchor)
            prev_hash, expected_seq, count = row["hash"], expected_seq + 1, count + 1


async def verify_with_anchor(db: Database, path: Path | None = None) -> ChainReport:
    """:func:`verify_chain` against the head in the anchor file at ``path`` (default: the one
    attached to ``db``); without an anchor file only the chain itself is checked."""
    if path is None:
        attached = anchor_of(db)
        path = attached.path if attached is not None else None
    known = await asyncio.to_thread(read_head, path) if path is not None else None
    return await verify_chain(db, anchor=known)


def _against_anchor(count: int, anchor: Head | None) -> ChainReport:
    """The chain held for ``count`` records (seq 1..count); does it reach the anchor's head?"""
    if anchor is not None and count < anchor.seq:
        return ChainReport(False, count, count + 1,
                           f"truncated: the log ends at {count} but the anchor says {anchor.seq}", anchor)
    return ChainReport(True, count, anchor=anchor)


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
