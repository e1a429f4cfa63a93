"""API tokens for scripts (``Authorization: Bearer hl_…``), stored as SHA-256 only.

Tokens are 256-bit random, so a fast hash is enough (no KDF needed); the plaintext is shown
once at creation. A token acts as its user, with the user's current rights.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from common.hashing import hash_secret

from ..store import Database, Row, Transaction
from .usage import UsageLedger

PREFIX = "hl_"


@dataclass(frozen=True)
class NewToken:
    id: str
    token: str
    expires_at: float | None


async def create(tx: Transaction, user_id: str, name: str, ttl_s: float | None) -> NewToken:
    token_id = "t_" + secrets.token_hex(8)
    token = PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    expires = now + ttl_s if ttl_s else None
    await tx.execute(
        "INSERT INTO api_tokens (id, token_hash, user_id, name, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        (token_id, hash_secret(token), user_id, name[:100], now, expires),
    )
    return NewToken(token_id, token, expires)


#: last_used is recorded at most this often per token.
TOUCH_EVERY_S = 60


async def lookup(db: Database, token: str, usage: UsageLedger, now: float | None = None) -> Row | None:
    """The token's user row (with ``token_id``) if the token is valid and the user enabled.

    Reads only: the use is remembered in ``usage`` and written later in a batch, so a database
    that cannot take writes does not fail the request.
    """
    if not token.startswith(PREFIX):
        return None
    now = time.time() if now is None else now
    row = await db.fetchone(
        "SELECT t.id AS token_id, t.expires_at, t.revoked_at, t.last_used, u.* FROM api_tokens t"
        " JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
        (hash_secret(token),),
    )
    if row is None or row["disabled"] or row["revoked_at"] is not None:
        return None
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return None
    last_used = usage.token_last_used(row["token_id"], row["last_used"])
    if last_used is None or now - last_used > TOUCH_EVERY_S:
        usage.token_used(row["token_id"], now)
        last_used = now
    row["last_used"] = last_used
    return row


async def revoke(tx: Transaction, token_id: str, user_id: str | None = None) -> bool:
    sql, params = "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [time.time(), token_id]
    if user_id is not None:
        sql += " AND user_id = ?"
        params.append(user_id)
    return await tx.execute(sql, params) > 0


async def revoke_all(tx: Transaction, user_id: str) -> list[str]:
    """Revoke every live token of ``user_id`` (a password or TOTP reset); return their ids."""
    rows = await tx.fetchall("SELECT id FROM api_tokens WHERE user_id = ? AND revoked_at IS NULL", (user_id,))
    await tx.execute("UPDATE api_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                     (time.time(), user_id))
    return [r["id"] for r in rows]


async def list_for(db: Database, user_id: str | None = None) -> list[Row]:
    sql = ("SELECT t.id, t.name, t.user_id, u.username, t.created_at, t.expires_at, t.last_used, t.revoked_at"
           " FROM api_tokens t JOIN users u ON u.id = t.user_id")
    params: list[object] = []
    if user_id is not None:
        sql += " WHERE t.user_id = ?"
        params.append(user_id)
    return await db.fetchall(sql + " ORDER BY t.created_at DESC", params)
