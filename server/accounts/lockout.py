"""The per-user login lockout, atomic across concurrent attempts and server nodes.

Checking the lock before the slow password hash and counting the failure after it let 20
parallel guesses all be checked: each read "not locked" before any was counted. So an
attempt is *reserved* first: one conditional ``UPDATE`` counts it as a failure up front, and
only while the account is unlocked and fewer than :data:`MAX_FAILURES` attempts are counted.
The condition is evaluated under the row's write lock on both engines (SQLite: the database
write lock; PostgreSQL, READ COMMITTED: a blocked ``UPDATE`` re-checks its ``WHERE`` on the
row a concurrent transaction left), so parallel reservations queue on the count instead of
reading the same one. At most :data:`MAX_FAILURES` attempts reach the hash; the others are
refused as locked without hashing.

After the hash the reservation is settled: a success clears the count (the login's success
path), a failure stays counted and locks the account once the count reaches the threshold
(:func:`settle_failure`), and a step that is no failure — the right password with the TOTP
code still to come — gives the reservation back (:func:`refund`). An attempt cut off by a
crash stays counted as a failure, which errs on the safe side.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..store import Database, Transaction

MAX_FAILURES = 5
LOCKOUT_S = 15 * 60
#: Retry-After when the attempts in flight already reach the threshold (the lock is not set yet).
IN_FLIGHT_RETRY_S = 5.0


async def reserve(db: Database, user_id: str, now: float) -> bool:
    """Count one attempt before checking it; False (nothing counted) when locked or at the threshold."""
    return await db.execute(
        "UPDATE users SET failed_logins = failed_logins + 1"
        " WHERE id = ? AND failed_logins < ? AND (locked_until IS NULL OR locked_until <= ?)",
        (user_id, MAX_FAILURES, now)) == 1


async def retry_after(db: Database, user_id: str, now: float) -> float:
    """Seconds until a refused attempt may be tried again."""
    row = await db.fetchone("SELECT locked_until FROM users WHERE id = ?", (user_id,))
    until = row["locked_until"] if row else None
    return float(until - now) if until and until > now else IN_FLIGHT_RETRY_S


@dataclass(frozen=True)
class Settled:
    failures: int
    locked: bool


async def settle_failure(tx: Transaction, user_id: str, now: float) -> Settled:
    """The reserved attempt failed (it is already counted): lock once the count reaches the threshold."""
    row = await tx.fetchone("SELECT failed_logins FROM users WHERE id = ?", (user_id,))
    failures = int(row["failed_logins"]) if row else 0
    locked = await tx.execute(
        "UPDATE users SET failed_logins = 0, locked_until = ? WHERE id = ? AND failed_logins >= ?",
        (now + LOCKOUT_S, user_id, MAX_FAILURES)) == 1
    return Settled(failures, locked)


async def refund(db: Database, user_id: str) -> None:
    """The reserved attempt was no failure (right password, code still to come): uncount it."""
    await db.execute("UPDATE users SET failed_logins = failed_logins - 1 WHERE id = ? AND failed_logins > 0",
                     (user_id,))
