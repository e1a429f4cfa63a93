"""Every SQL statement of support codes and support clients (no decisions here)."""

from __future__ import annotations

from server.store import Row
from server.store.database import Executor

#: The columns a listing may show: never ``code_hash``.
_CODE_COLUMNS = ("id, group_name, technician_user, reason, created_at, expires_at, used_at, used_from,"
                 " revoked_at, revoked_by, client_id")
_LIVE = "used_at IS NULL AND revoked_at IS NULL AND expires_at > ?"


async def live_count(db: Executor, now: float) -> int:
    row = await db.fetchone(f"SELECT COUNT(*) AS n FROM support_codes WHERE {_LIVE}", (now,))  # noqa: S608 - constant fragments only
    return int(row["n"]) if row else 0


async def insert_code(db: Executor, *, code_id: str, digest: str, group: str, technician: str, reason: str,
                      created_at: float, expires_at: float) -> None:
    await db.execute(
        "INSERT INTO support_codes (id, code_hash, group_name, technician_user, reason, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)", (code_id, digest, group, technician, reason, created_at, expires_at))


async def hash_taken(db: Executor, digest: str) -> bool:
    return await db.fetchone("SELECT 1 AS x FROM support_codes WHERE code_hash = ?", (digest,)) is not None


async def by_hash(db: Executor, digest: str) -> Row | None:
    return await db.fetchone(f"SELECT {_CODE_COLUMNS} FROM support_codes WHERE code_hash = ?", (digest,))  # noqa: S608 - constant fragments only


async def get_code(db: Executor, code_id: str) -> Row | None:
    return await db.fetchone(f"SELECT {_CODE_COLUMNS} FROM support_codes WHERE id = ?", (code_id,))  # noqa: S608 - constant fragments only


def _in_groups(column: str, groups: list[str] | None) -> tuple[str, tuple[str, ...]]:
    """`` AND column IN (…)`` for a caller's groups (None: every group; none: nothing matches)."""
    if groups is None:
        return "", ()
    if not groups:
        return " AND 1 = 0", ()
    return f" AND {column} IN ({', '.join('?' * len(groups))})", tuple(groups)


async def recent_codes(db: Executor, since: float, groups: list[str] | None = None, limit: int = 200) -> list[Row]:
    """The newest codes of ``groups`` (all when None) created since ``since``."""
    where, params = _in_groups("group_name", groups)
    return await db.fetchall(f"SELECT {_CODE_COLUMNS} FROM support_codes WHERE created_at >= ?{where}"  # noqa: S608 - constant fragments only
                             " ORDER BY created_at DESC LIMIT ?", (since, *params, limit))


async def lock_creation(tx: Executor) -> None:
    """Codes are created one at a time over every node (PostgreSQL): the live count and the insert stay together.
    SQLite is one node, whose writes are one at a time anyway."""
    if tx.dialect == "postgresql":
        await tx.execute("SELECT pg_advisory_xact_lock(4319)")


async def consume(db: Executor, code_id: str, *, now: float, address: str, client_id: str) -> bool:
    """Spend a live code; False when another redeem, a revocation or the clock got there first."""
    changed = await db.execute(
        f"UPDATE support_codes SET used_at = ?, used_from = ?, client_id = ? WHERE id = ? AND {_LIVE}",  # noqa: S608 - constant fragments only
        (now, address[:64], client_id, code_id, now))
    return changed == 1


async def revoke(db: Executor, code_id: str, *, by: str, now: float) -> bool:
    changed = await db.execute(
        f"UPDATE support_codes SET revoked_at = ?, revoked_by = ? WHERE id = ? AND {_LIVE}",  # noqa: S608 - constant fragments only
        (now, by, code_id, now))
    return changed == 1


async def insert_client(db: Executor, *, client_id: str, code_id: str, group: str, technician: str, hostname: str,
                        os_user: str, address: str, now: float) -> None:
    await db.execute(
        "INSERT INTO support_clients (id, code_id, group_name, technician_user, hostname, os_user, address,"
        " connected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (client_id, code_id, group, technician, hostname, os_user, address[:64], now))


async def get_client(db: Executor, client_id: str) -> Row | None:
    return await db.fetchone("SELECT * FROM support_clients WHERE id = ?", (client_id,))


async def recent_clients(db: Executor, since: float, groups: list[str] | None = None, limit: int = 200) -> list[Row]:
    """The newest support clients of ``groups`` (all when None) connected since ``since``."""
    where, params = _in_groups("c.group_name", groups)
    return await db.fetchall(
        "SELECT c.*, s.state AS session_state, s.end_reason AS session_end_reason FROM support_clients c"  # noqa: S608 - constant fragments only
        f" LEFT JOIN sessions s ON s.id = c.session_id WHERE c.connected_at >= ?{where}"
        " ORDER BY c.connected_at DESC LIMIT ?", (since, *params, limit))


async def set_client_session(db: Executor, client_id: str, session_id: str) -> bool:
    """Bind the client's one session; False when it already has one."""
    changed = await db.execute("UPDATE support_clients SET session_id = ? WHERE id = ? AND session_id = ''",
                               (session_id, client_id))
    return changed == 1


async def end_client(db: Executor, client_id: str, now: float) -> None:
    await db.execute("UPDATE support_clients SET ended_at = ? WHERE id = ? AND ended_at IS NULL", (now, client_id))


async def client_group(db: Executor, client_id: str) -> str | None:
    if len(client_id) > 64:
        return None
    row = await db.fetchone("SELECT group_name FROM support_clients WHERE id = ?", (client_id,))
    return None if row is None else str(row["group_name"])


async def code_group(db: Executor, code_id: str) -> str | None:
    if len(code_id) > 64:
        return None
    row = await db.fetchone("SELECT group_name FROM support_codes WHERE id = ?", (code_id,))
    return None if row is None else str(row["group_name"])
