"""Passkeys and ceremony tickets in the store (SQL only; the WebAuthn checks are python-fido2's).

A passkey row holds public data: the COSE key the administrator certifies, its relying party
and origins, the last signature counter. A ticket carries a ceremony from its first step to its
second (registration, a login's passkey step): only its SHA-256 is stored, it expires within
minutes and :func:`take_ticket` consumes it, so an answer is accepted once.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from certs import ceremony
from common.hashing import hash_secret
from protocol.authority import PasskeyKey, key_fingerprint
from server.store import Database, Row, Transaction

Purpose = Literal["register", "login"]

#: A registration has five minutes between "begin" and "finish", a login's passkey step two.
TICKET_TTL_S: dict[str, float] = {"register": 300.0, "login": 120.0}
#: A person rarely has more than a few; the cap bounds allowCredentials and the listing.
MAX_PER_USER = 20


def new_id() -> str:
    """A passkey id that is also a valid certificate credential id (``--id`` at certification)."""
    return "pk-" + secrets.token_urlsafe(12)


@dataclass(frozen=True)
class Passkey:
    id: str
    user_id: str
    webauthn_id: str
    cose_key: bytes
    rp_id: str
    origins: tuple[str, ...]
    sign_count: int
    label: str
    created_at: float
    last_used: float | None
    revoked_at: float | None

    @classmethod
    def from_row(cls, row: Row) -> Passkey:
        return cls(id=row["id"], user_id=row["user_id"], webauthn_id=row["webauthn_id"],
                   cose_key=base64.b64decode(row["cose_key"]), rp_id=row["rp_id"],
                   origins=tuple(json.loads(row["origins"])), sign_count=int(row["sign_count"]), label=row["label"],
                   created_at=row["created_at"], last_used=row["last_used"], revoked_at=row["revoked_at"])

    def public_key(self) -> PasskeyKey:
        """What ``helpline trust certify --cose-key`` takes and a certificate carries."""
        return ceremony.passkey_key(self.cose_key, rp_id=self.rp_id, webauthn_id=self.webauthn_id,
                                    origins=self.origins)

    @property
    def fingerprint(self) -> str:
        """What the holder reads to the administrator (SHA-256 of the COSE key bytes)."""
        return key_fingerprint(self.public_key())


async def insert(tx: Transaction, passkey: Passkey) -> None:
    await tx.execute(
        "INSERT INTO passkeys (id, user_id, webauthn_id, cose_key, rp_id, origins, sign_count, label, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (passkey.id, passkey.user_id, passkey.webauthn_id, base64.b64encode(passkey.cose_key).decode(),
         passkey.rp_id, json.dumps(list(passkey.origins)), passkey.sign_count, passkey.label, passkey.created_at))


async def list_for(db: Database | Transaction, user_id: str, *, active_only: bool = False) -> list[Passkey]:
    sql = "SELECT * FROM passkeys WHERE user_id = ?"
    if active_only:
        sql += " AND revoked_at IS NULL"
    rows = await db.fetchall(sql + " ORDER BY created_at, id", (user_id,))
    return [Passkey.from_row(r) for r in rows]


async def count_active(db: Database | Transaction, user_id: str) -> int:
    row = await db.fetchone("SELECT COUNT(*) AS n FROM passkeys WHERE user_id = ? AND revoked_at IS NULL", (user_id,))
    return int(row["n"]) if row else 0


async def get(db: Database | Transaction, passkey_id: str) -> Passkey | None:
    if len(passkey_id) > 64:
        return None
    row = await db.fetchone("SELECT * FROM passkeys WHERE id = ?", (passkey_id,))
    return Passkey.from_row(row) if row else None


async def by_webauthn_id(db: Database | Transaction, webauthn_id: str) -> Passkey | None:
    row = await db.fetchone("SELECT * FROM passkeys WHERE webauthn_id = ?", (webauthn_id,))
    return Passkey.from_row(row) if row else None


async def revoke(tx: Transaction, passkey_id: str, now: float) -> bool:
    return await tx.execute("UPDATE passkeys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                            (now, passkey_id)) == 1


async def record_use(db: Database, passkey: Passkey, counter: int, now: float) -> bool:
    """Store a verified assertion's counter; False when another use stored a counter as high first.

    Compare-and-set on the counter: of two uses racing with one counter value, one loses.
    Authenticators that keep no counter (always 0, as synced passkeys do) only update last_used.
    """
    if counter == 0 and passkey.sign_count == 0:
        await db.execute("UPDATE passkeys SET last_used = ? WHERE id = ?", (now, passkey.id))
        return True
    return await db.execute("UPDATE passkeys SET sign_count = ?, last_used = ? WHERE id = ? AND sign_count < ?",
                            (counter, now, passkey.id, counter)) == 1


# --- tickets ----------------------------------------------------------------------------------


async def put_ticket(db: Database, user_id: str, purpose: Purpose, state: dict[str, Any],
                     now: float | None = None) -> str:
    """A new single-use ticket carrying ``state`` to the ceremony's second step; returns the ticket."""
    now = time.time() if now is None else now
    ticket = secrets.token_urlsafe(32)
    async with db.transaction() as tx:
        await tx.execute("DELETE FROM passkey_challenges WHERE expires_at < ?", (now,))
        await tx.execute("INSERT INTO passkey_challenges (ticket_hash, user_id, purpose, state, expires_at)"
                         " VALUES (?, ?, ?, ?, ?)",
                         (hash_secret(ticket), user_id, purpose, json.dumps(state), now + TICKET_TTL_S[purpose]))
    return ticket


async def take_ticket(db: Database, ticket: str, purpose: Purpose,
                      now: float | None = None) -> tuple[str, dict[str, Any]] | None:
    """Consume ``ticket``: its user id and state, or None when unknown, used, expired or for another purpose."""
    now = time.time() if now is None else now
    key = hash_secret(ticket)
    row = await db.fetchone("SELECT user_id, purpose, state, expires_at FROM passkey_challenges WHERE ticket_hash = ?",
                            (key,))
    if row is None:
        return None
    # Whoever deletes the row owns the ticket: a concurrent second answer finds nothing to delete.
    if await db.execute("DELETE FROM passkey_challenges WHERE ticket_hash = ?", (key,)) != 1:
        return None
    if row["purpose"] != purpose or row["expires_at"] < now:
        return None
    state: dict[str, Any] = json.loads(row["state"])
    return str(row["user_id"]), state
