"""Every SQL statement of self-update: artifacts, rollouts, per-device targets. Changes are audited.

The server checks an upload against the release manifest only to keep useless bytes out (right
name, size and SHA-256 as the manifest lists them); devices check the manifest's signatures and the
bytes again, and nothing the server stores can make them install anything else.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from .. import audit, events
from ..store import Database, Row, Transaction
from .waves import OFFERED, PENDING, RolloutStatus

#: Published when a rollout is created, halted or cancelled: every node's tick looks again.
ROLLOUT_CHANGED = "update.rollout_changed"


def new_rollout_id() -> str:
    return f"upd_{secrets.token_hex(8)}"


# --- artifacts ------------------------------------------------------------------------------------


async def put_artifact(db: Database, *, sha256: str, version: str, name: str, size: int, actor: str) -> bool:
    """Record an uploaded artifact (once); True when it was new."""
    async with db.transaction() as tx:
        if await tx.fetchone("SELECT 1 AS x FROM update_artifacts WHERE sha256 = ?", (sha256,)):
            return False
        await tx.execute("INSERT INTO update_artifacts (sha256, version, name, size, uploaded_at, uploaded_by)"
                         " VALUES (?, ?, ?, ?, ?, ?)", (sha256, version, name, size, time.time(), actor))
        await audit.append_in(tx, actor, "update.artifact_upload", f"{version}/{name}",
                              {"sha256": sha256, "size": size})
    await audit.anchor_head(db)
    return True


async def artifact(db: Database, sha256: str) -> Row | None:
    return await db.fetchone("SELECT * FROM update_artifacts WHERE sha256 = ?", (sha256,))


async def artifacts_of(db: Database, version: str) -> list[Row]:
    return await db.fetchall("SELECT * FROM update_artifacts WHERE version = ? ORDER BY name", (version,))


async def list_artifacts(db: Database) -> list[Row]:
    return await db.fetchall("SELECT * FROM update_artifacts ORDER BY uploaded_at DESC LIMIT 500")


# --- rollouts -------------------------------------------------------------------------------------


async def create_rollout(db: Database, *, version: str, document_id: str, artifact_name: str, artifact_sha256: str,
                         waves: dict[str, Any], threshold: float, assignment: dict[str, int], actor: str) -> Row:
    rollout_id, now = new_rollout_id(), time.time()
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO update_rollouts (id, version, document_id, artifact_name, artifact_sha256, waves,"
            " failure_threshold, status, wave, reason, device_count, created_at, created_by, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, '', ?, ?, ?, ?)",
            (rollout_id, version, document_id, artifact_name, artifact_sha256, json.dumps(waves), threshold,
             RolloutStatus.RUNNING, len(assignment), now, actor, now))
        for device_id, wave in sorted(assignment.items()):
            await tx.execute("INSERT INTO update_targets (rollout_id, device_id, wave, state, reason, offered_at,"
                             " updated_at) VALUES (?, ?, ?, ?, '', NULL, ?)",
                             (rollout_id, device_id, wave, PENDING, now))
        await audit.append_in(tx, actor, "update.rollout_create", rollout_id,
                              {"version": version, "artifact": artifact_name, "sha256": artifact_sha256,
                               "waves": waves, "failure_threshold": threshold, "devices": len(assignment)})
        await events.publish_in(tx, ROLLOUT_CHANGED, rollout_id, {"status": RolloutStatus.RUNNING})
    await audit.anchor_head(db)
    row = await rollout(db, rollout_id)
    assert row is not None
    return row


async def rollout(db: Database | Transaction, rollout_id: str) -> Row | None:
    if len(rollout_id) > 64:
        return None
    return await db.fetchone("SELECT * FROM update_rollouts WHERE id = ?", (rollout_id,))


async def list_rollouts(db: Database) -> list[Row]:
    return await db.fetchall("SELECT * FROM update_rollouts ORDER BY created_at DESC LIMIT 500")


async def running_rollouts(db: Database) -> list[Row]:
    return await db.fetchall("SELECT * FROM update_rollouts WHERE status = ? ORDER BY created_at",
                             (RolloutStatus.RUNNING,))


async def targets(db: Database | Transaction, rollout_id: str) -> list[Row]:
    return await db.fetchall("SELECT * FROM update_targets WHERE rollout_id = ? ORDER BY wave, device_id",
                             (rollout_id,))


async def set_status(db: Database, rollout_id: str, status: str, *, reason: str = "", wave: int | None = None,
                     actor: str = "server") -> bool:
    """Move a running rollout to ``status`` (or release ``wave``); audited. False when it was not running."""
    async with db.transaction() as tx:
        row = await rollout(tx, rollout_id)
        if row is None or row["status"] != RolloutStatus.RUNNING:
            return False
        new_wave = row["wave"] if wave is None else wave
        await tx.execute("UPDATE update_rollouts SET status = ?, wave = ?, reason = ?, updated_at = ? WHERE id = ?"
                         " AND status = ?", (status, new_wave, reason, time.time(), rollout_id, RolloutStatus.RUNNING))
        action = "update.wave_release" if status == RolloutStatus.RUNNING else f"update.rollout_{status}"
        await audit.append_in(tx, actor, action, rollout_id,
                              {"version": row["version"], "wave": new_wave, "reason": reason})
        await events.publish_in(tx, ROLLOUT_CHANGED, rollout_id, {"status": status})
    await audit.anchor_head(db)
    return True


# --- per device -----------------------------------------------------------------------------------


async def offers_for(db: Database, device_id: str) -> list[Row]:
    """Targets of running rollouts in a released wave that this device has not settled."""
    return await db.fetchall(
        "SELECT t.*, r.version, r.document_id, r.artifact_name, r.artifact_sha256 FROM update_targets t"
        " JOIN update_rollouts r ON r.id = t.rollout_id WHERE t.device_id = ? AND r.status = ? AND t.wave <= r.wave"
        " AND t.state IN (?, ?, 'downloading') ORDER BY r.created_at",
        (device_id, RolloutStatus.RUNNING, PENDING, OFFERED))


async def pending_devices(db: Database) -> list[str]:
    """Devices with a target not offered yet in a released wave of a running rollout (the tick offers to them)."""
    rows = await db.fetchall(
        "SELECT DISTINCT t.device_id FROM update_targets t JOIN update_rollouts r ON r.id = t.rollout_id"
        " WHERE r.status = ? AND t.wave <= r.wave AND t.state = ? ORDER BY t.device_id LIMIT 10000",
        (RolloutStatus.RUNNING, PENDING))
    return [r["device_id"] for r in rows]


async def mark_offered(db: Database, rollout_id: str, device_id: str) -> None:
    now = time.time()
    await db.execute("UPDATE update_targets SET state = ?, offered_at = ?, updated_at = ? WHERE rollout_id = ?"
                     " AND device_id = ? AND state IN (?, ?)",
                     (OFFERED, now, now, rollout_id, device_id, PENDING, OFFERED))


async def record_state(db: Database, rollout_id: str, device_id: str, state: str, reason: str, *,
                       running: str) -> Row | None:
    """A device's report for one of its targets; audited when the state changes. Returns the target row."""
    async with db.transaction() as tx:
        row = await tx.fetchone("SELECT * FROM update_targets WHERE rollout_id = ? AND device_id = ?",
                                (rollout_id, device_id))
        if row is None:
            return None
        if (row["state"], row["reason"]) == (state, reason):
            return row
        await tx.execute("UPDATE update_targets SET state = ?, reason = ?, updated_at = ? WHERE rollout_id = ?"
                         " AND device_id = ?", (state, reason, time.time(), rollout_id, device_id))
        await audit.append_in(tx, f"device:{device_id}", f"update.{state}", rollout_id,
                              {"device_id": device_id, "running": running, "reason": reason})
        await events.publish_in(tx, ROLLOUT_CHANGED, rollout_id, {"device_id": device_id, "state": state})
    await audit.anchor_head(db)
    return await db.fetchone("SELECT * FROM update_targets WHERE rollout_id = ? AND device_id = ?",
                             (rollout_id, device_id))


async def may_download(db: Database, device_id: str, sha256: str) -> bool:
    """Only a device offered this artifact by a rollout (not cancelled) fetches it."""
    row = await db.fetchone(
        "SELECT 1 AS x FROM update_targets t JOIN update_rollouts r ON r.id = t.rollout_id WHERE t.device_id = ?"
        " AND r.artifact_sha256 = ? AND r.status != ? AND t.offered_at IS NOT NULL",
        (device_id, sha256, RolloutStatus.CANCELLED))
    return row is not None
