"""Console cookie sessions: a random secret in the cookie, only its SHA-256 in the database.

Each session has a public id (for listing, revoking and closing its websockets), a CSRF
token sent back as ``X-CSRF-Token`` on state-changing requests, an idle timeout and an
absolute lifetime. A new session (new id, new secret) is created at every login.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from common.hashing import hash_secret

from ..store import Database, Row, Transaction
from .usage import UsageLedger

COOKIE_NAME = "__Host-helpline"
IDLE_S = 30 * 60
ABSOLUTE_S = 12 * 3600
#: last_seen is refreshed at most this often (written in batches, server/accounts/usage.py).
TOUCH_EVERY_S = 60


@dataclass(frozen=True)
class NewSession:
    id: str
    token: str
    csrf_token: str
    expires_at: float


async def create(tx: Transaction, user_id: str, *, peer: str = "", user_agent: str = "",
                 now: float | None = None) -> NewSession:
    now = time.time() if now is None else now
    session_id = "s_" + secrets.token_hex(12)
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    await tx.execute(
        "INSERT INTO console_sessions (id, token_hash, user_id, csrf_token, created_at, last_seen, peer, user_agent)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (session_id, hash_secret(token), user_id, csrf, now, now, peer[:64], user_agent[:200]),
    )
    return NewSession(session_id, token, csrf, now + ABSOLUTE_S)


def is_live(created_at: float, last_seen: float, revoked_at: float | None, now: float) -> bool:
    return revoked_at is None and now - last_seen < IDLE_S and now - created_at < ABSOLUTE_S


async def lookup(db: Database, token: str, usage: UsageLedger, now: float | None = None) -> Row | None:
    """The live session for a cookie value, joined with its (enabled) user; refreshes last_seen.

    Reads only: the refresh goes to ``usage``, written later in a batch, so a database that cannot
    take writes does not fail the request (nor end the session early on this node).
    """
    now = time.time() if now is None else now
    row = await db.fetchone(
        "SELECT s.id AS session_id, s.csrf_token, s.created_at AS s_created, s.last_seen AS s_seen,"
        " s.revoked_at AS s_revoked, u.*"
        " FROM console_sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
        (hash_secret(token),),
    )
    if row is None or row["disabled"]:
        return None
    row["s_seen"] = usage.session_last_seen(row["session_id"], row["s_seen"])
    if not is_live(row["s_created"], row["s_seen"], row["s_revoked"], now):
        return None
    if now - row["s_seen"] >= TOUCH_EVERY_S:
        usage.session_seen(row["session_id"], now)
        row["s_seen"] = now
    return row


def expires_at(row: Row) -> float:
    """When the session looked up as ``row`` ends if left idle (absolute limit included)."""
    return float(min(row["s_created"] + ABSOLUTE_S, row["s_seen"] + IDLE_S))


async def revoke(tx: Transaction | Database, session_id: str, now: float | None = None) -> bool:
    return await tx.execute("UPDATE console_sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                            (time.time() if now is None else now, session_id)) > 0


async def revoke_all(tx: Transaction, user_id: str, *, except_id: str | None = None) -> list[str]:
    """Revoke the user's live sessions (all but ``except_id``); return their ids."""
    keep = except_id or ""
    rows = await tx.fetchall("SELECT id FROM console_sessions WHERE user_id = ? AND revoked_at IS NULL AND id <> ?",
                             (user_id, keep))
    await tx.execute("UPDATE console_sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL AND id <> ?",
                     (time.time(), user_id, keep))
    return [r["id"] for r in rows]


async def list_for(db: Database, user_id: str | None = None) -> list[Row]:
    now = time.time()
    sql = ("SELECT s.id, s.user_id, u.username, s.created_at, s.last_seen, s.revoked_at, s.peer, s.user_agent"
           " FROM console_sessions s JOIN users u ON u.id = s.user_id WHERE s.revoked_at IS NULL"
           " AND s.last_seen > ? AND s.created_at > ?")
    params: list[object] = [now - IDLE_S, now - ABSOLUTE_S]
    if user_id is not None:
        sql += " AND s.user_id = ?"
        params.append(user_id)
    return await db.fetchall(sql + " ORDER BY s.created_at DESC", params)
