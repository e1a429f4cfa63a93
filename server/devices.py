"""Device registry: identity, certificate serials, status and presence."""

from __future__ import annotations

import time
from typing import Any

from . import audit, events
from .store import Database, Row, Transaction

DEVICE_REVOKED = "device.revoked"


async def ensure_group(tx: Transaction | Database, name: str) -> None:
    await tx.execute(
        "INSERT INTO device_groups (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (name, time.time())
    )


async def register(
    tx: Transaction, device_id: str, group: str, cert_serial: str, cert_not_after: float, hostname: str = ""
) -> None:
    await tx.execute(
        "INSERT INTO devices (id, group_name, hostname, cert_serial, cert_not_after, enrolled_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (device_id, group, hostname, cert_serial, cert_not_after, time.time()),
    )


async def get(db: Database | Transaction, device_id: str) -> Row | None:
    return await db.fetchone("SELECT * FROM devices WHERE id = ?", (device_id,))


async def list_all(db: Database) -> list[Row]:
    return await db.fetchall("SELECT * FROM devices ORDER BY group_name, hostname, id")


def status_of(row: Row) -> str:
    if row["status"] == "revoked":
        return "revoked"
    return "online" if row["online"] else "offline"


async def mark_hello(db: Database, device_id: str, *, agent_version: str, screen_backend: str | None,
                     screen_view_only: bool = False) -> None:
    """After a hello: online, seen now, its agent's version, the screen backend it named (None: none;
    :mod:`server.cmdb.screen_backend`) and whether it said view-only, in one write — a connect's statements
    bound how fast a node takes back a killed node's agents."""
    now = time.time()
    await db.execute("UPDATE devices SET online = 1, last_seen = ?, agent_version = ?, screen_backend = ?,"
                     " screen_backend_at = ?, screen_view_only = ? WHERE id = ?",
                     (now, agent_version, screen_backend or None, now, int(screen_view_only), device_id))


async def touch(db: Database, device_ids: list[str], now: float | None = None) -> None:
    """Live connections on this node: online, last seen now (batched, called every presence sweep).

    Writing ``online`` too, not only ``last_seen``, re-derives the flag from the connection itself:
    a flag that a failed write or another node's sweep left wrong is put right by the next touch.
    """
    now = time.time() if now is None else now
    await db.executemany("UPDATE devices SET online = 1, last_seen = ? WHERE id = ? AND status <> 'revoked'",
                         [(now, d) for d in device_ids])


async def mark_offline(db: Database, device_id: str, at: float | None = None) -> bool:
    """The channel closed at ``at``; False when nothing was written.

    Conditional on last_seen: a write retried after an outage must not undo a newer connection
    (on another node, whose ``mark_hello`` wrote a later last_seen).
    """
    at = time.time() if at is None else at
    return await db.execute("UPDATE devices SET online = 0, last_seen = ? WHERE id = ?"
                            " AND (last_seen IS NULL OR last_seen <= ?)", (at, device_id, at)) > 0


async def mark_stale_offline(db: Database, *, before: float, live: set[str]) -> list[str]:
    """Devices flagged online with no contact since ``before`` and no live connection here → offline.

    A node holding a device's connection refreshes its last_seen every sweep, so a flag this old
    is left over from a lost write or a node that died. Returns the ids set offline.
    """
    rows = await db.fetchall("SELECT id FROM devices WHERE online = 1 AND (last_seen IS NULL OR last_seen < ?)",
                             (before,))
    stale = [r["id"] for r in rows if r["id"] not in live]
    if stale:
        await db.executemany("UPDATE devices SET online = 0 WHERE id = ? AND online = 1"
                             " AND (last_seen IS NULL OR last_seen < ?)", [(d, before) for d in stale])
    return stale


async def mark_all_offline(db: Database) -> None:
    await db.execute("UPDATE devices SET online = 0 WHERE online = 1")


async def set_hostname(db: Database | Transaction, device_id: str, hostname: str) -> None:
    await db.execute("UPDATE devices SET hostname = ? WHERE id = ?", (hostname[:255], device_id))


async def revoke(db: Database, device_id: str, *, actor: str) -> bool:
    """Mark revoked, tell every server node (event) and audit. False if unknown or already revoked."""
    async with db.transaction() as tx:
        # One statement finds and flips the row (a round trip fewer on the fan-out's path, issue 20), and
        # conditional: of concurrent revocations (PostgreSQL runs them at once) only one goes on.
        row = await tx.fetchone("UPDATE devices SET status = 'revoked', revoked_at = ?, online = 0 WHERE id = ?"
                                " AND status <> 'revoked' RETURNING group_name", (time.time(), device_id))
        if row is None:
            return False
        await events.publish_in(tx, DEVICE_REVOKED, device_id)
        await audit.append_in(tx, actor, "device.revoke", device_id, {"group": row["group_name"]})
    return True


async def set_pending_certificate(db: Database, device_id: str, serial: str, not_after: float) -> None:
    await db.execute(
        "UPDATE devices SET pending_cert_serial = ?, pending_cert_not_after = ? WHERE id = ?",
        (serial, not_after, device_id),
    )


class CertificateRejected(Exception):
    """The presented certificate is not the device's current one."""


async def check_presented_certificate(db: Database, device_id: str, serial: str) -> Row:
    """Accept the current serial, or the renewed one (which then replaces the old for good)."""
    row = await get(db, device_id)
    if row is None:
        raise CertificateRejected("unknown device")
    if row["status"] == "revoked":
        raise CertificateRejected("device revoked")
    if serial == row["cert_serial"]:
        return row
    if row["pending_cert_serial"] and serial == row["pending_cert_serial"]:
        async with db.transaction() as tx:
            await tx.execute(
                "UPDATE devices SET cert_serial = pending_cert_serial, cert_not_after = pending_cert_not_after,"
                " pending_cert_serial = NULL, pending_cert_not_after = NULL WHERE id = ?",
                (device_id,),
            )
            await audit.append_in(tx, f"device:{device_id}", "device.cert.renewed", device_id,
                                  {"old_serial": row["cert_serial"], "new_serial": serial})
        fresh = await get(db, device_id)
        assert fresh is not None
        return fresh
    raise CertificateRejected("certificate serial is not current (superseded or unknown)")


def describe(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "hostname": row["hostname"],
        "group": row["group_name"],
        "status": status_of(row),
        "last_seen": row["last_seen"],
        "cert_expires": row["cert_not_after"],
        "agent_version": row["agent_version"],
    }
