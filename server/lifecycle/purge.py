"""Purging a decommissioned device: everything the server holds about it, except the audit log.

Only a revoked device may be purged (:class:`NotRevoked` otherwise: revoke first, so nothing new arrives
while it is deleted). The ``devices`` row stays as the tombstone (status ``revoked``, hostname and agent
version cleared; its id is the primary key, so it is never issued again) with a ``device_tombstones``
row saying when, by whom and how much; the audit log keeps every record and gains ``device.purged``
with the counts. The tables cleared are :data:`DEVICE_TABLES` plus the rows reached through sessions,
support requests and task runs (:func:`purge_device`); README "Retention and purging" lists them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from server import audit
from server.storage.objects import ObjectStore, ObjectStoreError, artifact_name
from server.store import Database

from .retention import delete_recording_files

log = logging.getLogger(__name__)

#: Tables keyed by ``device_id`` whose rows are deleted outright (inventory, health, software, personal data …).
DEVICE_TABLES = ("inventory_sections", "inventory_changes", "software", "cmdb_devices", "cmdb_logins",
                 "cmdb_networks", "health_samples", "health_rollups", "health_gaps", "health_state", "alerts",
                 "licence_installs", "vuln_matches", "update_targets", "task_schedule_state",
                 "authority_device_status", "surveys")


class NotRevoked(Exception):
    """The device is unknown, still active, or purged already (the API answers 404/409)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _purged_details(details: str | None, now: float) -> str:
    """The run's details with its artifact record replaced by "purged" (a download then answers 404)."""
    try:
        data = json.loads(details or "{}")
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    data["artifact"] = {"stored": False, "purged": True, "purged_at": now}
    return json.dumps(data)


async def purge_device(db: Database, device_id: str, *, actor: str, recordings_dir: Path, artifacts_dir: Path,
                       store: ObjectStore | None, now: float | None = None) -> dict[str, int]:
    """Delete the device's data (see the module docstring); the counts per table, as audited."""
    now = time.time() if now is None else now
    counts: dict[str, int] = {}
    async with db.transaction() as tx:
        device = await tx.fetchone("SELECT id, status FROM devices WHERE id = ?", (device_id,))
        if device is None:
            raise NotRevoked("not_found", "no such device")
        if device["status"] != "revoked":
            raise NotRevoked("device_not_revoked", "revoke the device first; only a revoked device can be purged")
        if await tx.fetchone("SELECT device_id FROM device_tombstones WHERE device_id = ?", (device_id,)):
            raise NotRevoked("already_purged", "this device was purged already")
        recordings = await tx.fetchall("SELECT id, recording_path FROM sessions WHERE device_id = ? AND"
                                       " recording_path IS NOT NULL AND recording_path <> ''", (device_id,))
        runs = await tx.fetchall("SELECT id, details FROM task_runs WHERE device_id = ? AND details LIKE ?",
                                 (device_id, '%"artifact"%'))
        for table in DEVICE_TABLES:
            counts[table] = await tx.execute(f"DELETE FROM {table} WHERE device_id = ?", (device_id,))  # noqa: S608
        counts["cmdb_relations"] = await tx.execute(
            "DELETE FROM cmdb_relations WHERE (source_type = 'device' AND source_id = ?)"
            " OR (target_type = 'device' AND target_id = ?)", (device_id, device_id))
        sessions = "SELECT id FROM sessions WHERE device_id = ?"
        counts["session_chat"] = await tx.execute(f"DELETE FROM session_chat WHERE session_id IN ({sessions})",  # noqa: S608
                                                  (device_id,))
        counts["session_notes"] = await tx.execute(
            f"DELETE FROM session_notes WHERE session_id IN ({sessions})", (device_id,))  # noqa: S608
        # The write-back outbox keeps a copy of the note (transcript, notes, hostname) until it is sent.
        counts["ticket_writebacks"] = await tx.execute(
            f"UPDATE ticket_writebacks SET body = NULL, state = CASE WHEN state = 'pending' THEN 'failed'"  # noqa: S608
            f" ELSE state END, last_error = CASE WHEN state = 'pending' THEN 'device purged' ELSE last_error END"
            f" WHERE session_id IN ({sessions}) AND (body IS NOT NULL OR state = 'pending')", (device_id,))
        counts["recordings"] = await tx.execute("UPDATE sessions SET recording_path = NULL WHERE device_id = ? AND"
                                                " recording_path IS NOT NULL AND recording_path <> ''", (device_id,))
        counts["support_request_attachments"] = await tx.execute(
            "DELETE FROM support_request_attachments WHERE request_id IN"
            " (SELECT id FROM support_requests WHERE device_id = ?)", (device_id,))
        await tx.execute("UPDATE support_requests SET has_screenshot = 0 WHERE device_id = ?", (device_id,))
        for run in runs:
            await tx.execute("UPDATE task_runs SET details = ? WHERE id = ?", (_purged_details(run["details"], now),
                                                                                run["id"]))
        counts["task_artifacts"] = len(runs)
        await tx.execute("UPDATE devices SET hostname = '', agent_version = '', online = 0 WHERE id = ?",
                         (device_id,))
        counts = {k: v for k, v in counts.items() if v}
        await tx.execute("INSERT INTO device_tombstones (device_id, purged_at, purged_by, counts) VALUES (?, ?, ?, ?)",
                         (device_id, now, actor, json.dumps(counts, sort_keys=True)))
        await audit.append_in(tx, actor, "device.purged", device_id, {"counts": counts})
    # Files after the commit: a failure leaves orphan sealed files (logged), never rows pointing at nothing.
    for row in recordings:
        await delete_recording_files(row["recording_path"], row["id"], recordings_dir, store)
    for run in runs:
        (artifacts_dir / f"{run['id']}.tar.gz").unlink(missing_ok=True)
        if store is not None:
            try:
                await store.delete(artifact_name(run["id"]))
            except (ObjectStoreError, ValueError) as exc:
                log.error("artifact object not deleted", extra={"run_id": run["id"], "error": str(exc)})
    log.warning("device purged", extra={"device_id": device_id, "actor": actor, "counts": counts})
    return counts
