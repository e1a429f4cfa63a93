"""One retention pass over everything kept for a period (config ``[retention]``; 0 = keep forever).

* recordings (``recordings_days`` after the session ended): the session's ``recording_path`` is
  cleared, then its files and store objects deleted; audited ``retention.recording_deleted`` each;
* chat transcripts (``chat_days`` after each message): ``session_chat`` rows, audited
  ``retention.chat_deleted`` with the count;
* request screenshots (``screenshots_days`` after the request was made): the attachment's
  screenshot set to NULL, audited ``retention.screenshots_deleted`` with the count;
* task artifacts (``task_artifact_retention_days``): :meth:`ArtifactReceiver.expire`, audited
  ``task.artifact.expired`` each;
* login history (the personal-data setting ``login_retention_days``): :func:`server.cmdb.personal.purge`,
  audited ``retention.logins_trimmed`` with the counts.

Several nodes may run it at once: every deletion is conditional (``… WHERE recording_path = ?``, a
DELETE of what is older), and only the node whose statement changed rows audits it. With the shared
(NATS) store a node also drops its cached copies of recordings and artifacts another node deleted (not
audited again; a recording the database never pointed at, from a crash, is left alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server import audit
from server.storage.objects import JetStreamObjectStore, ObjectStore, ObjectStoreError, recording_names
from server.store import Database, Row, StoreUnavailable

if TYPE_CHECKING:
    from server.tasks.artifacts import ArtifactReceiver

log = logging.getLogger(__name__)

DAY_S = 86400.0
ACTOR = "retention"


@dataclass
class RetentionReport:
    """What a pass deleted (or, dry run, would delete)."""

    recordings: list[str] = field(default_factory=list)  # session ids
    chat_messages: int = 0
    screenshots: int = 0
    artifacts: list[str] = field(default_factory=list)  # run ids
    login_sections_trimmed: int = 0
    login_changes_deleted: int = 0
    cached_files_dropped: int = 0

    def lines(self) -> list[str]:
        return [f"recordings: {len(self.recordings)}" + (f" ({', '.join(self.recordings)})" if self.recordings else ""),
                f"chat messages: {self.chat_messages}",
                f"request screenshots: {self.screenshots}",
                f"task artifacts: {len(self.artifacts)}"
                + (f" ({', '.join(self.artifacts)})" if self.artifacts else ""),
                f"login history: {self.login_sections_trimmed} section(s) trimmed,"
                f" {self.login_changes_deleted} change(s) deleted"]


def _cutoff(days: int, now: float) -> float | None:
    return None if days <= 0 else now - days * DAY_S


async def expired_recordings(db: Database, days: int, now: float) -> list[Row]:
    cutoff = _cutoff(days, now)
    if cutoff is None:
        return []
    return await db.fetchall(
        "SELECT id, device_id, recording_path, ended_at FROM sessions WHERE recording_path IS NOT NULL"
        " AND recording_path <> '' AND ended_at IS NOT NULL AND ended_at < ? ORDER BY ended_at", (cutoff,))


async def delete_recording_files(row_path: str | None, session_id: str, recordings_dir: Path,
                                 store: ObjectStore | None) -> None:
    """This node's files of a recording (at its stored path and in this node's directory) and the store's."""
    paths = {recordings_dir / f"{session_id}.hlrec"}
    if row_path and Path(row_path).name == f"{session_id}.hlrec":
        paths.add(Path(row_path))
    for stream in paths:
        for path in (stream, stream.with_suffix(".cast"), stream.with_suffix(".json")):
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)
    if store is not None:
        for name in recording_names(session_id):
            try:
                await store.delete(name)
            except (ObjectStoreError, ValueError) as exc:
                log.error("recording object not deleted", extra={"object": name, "error": str(exc)})


async def _recordings(db: Database, days: int, now: float, recordings_dir: Path, store: ObjectStore | None,
                      report: RetentionReport, dry_run: bool) -> None:
    for row in await expired_recordings(db, days, now):
        if dry_run:
            report.recordings.append(row["id"])
            continue
        async with db.transaction() as tx:
            # Conditional: another node may have deleted it already; only the one that cleared it audits.
            if await tx.execute("UPDATE sessions SET recording_path = NULL WHERE id = ? AND recording_path = ?",
                                (row["id"], row["recording_path"])) != 1:
                continue
            await audit.append_in(tx, ACTOR, "retention.recording_deleted", row["device_id"], {
                "session_id": row["id"], "ended_at": row["ended_at"], "retention_days": days})
        await delete_recording_files(row["recording_path"], row["id"], recordings_dir, store)
        report.recordings.append(row["id"])


async def _chat(db: Database, days: int, now: float, report: RetentionReport, dry_run: bool) -> None:
    cutoff = _cutoff(days, now)
    if cutoff is None:
        return
    if dry_run:
        row = await db.fetchone("SELECT COUNT(*) AS n FROM session_chat WHERE at < ?", (cutoff,))
        report.chat_messages = int(row["n"]) if row else 0
        return
    async with db.transaction() as tx:
        deleted = await tx.execute("DELETE FROM session_chat WHERE at < ?", (cutoff,))
        # The ticket write-back outbox's copy of a transcript (dropped once sent; this catches failed ones).
        await tx.execute("UPDATE ticket_writebacks SET body = NULL WHERE body IS NOT NULL AND created_at < ?",
                         (cutoff,))
        if deleted:
            await audit.append_in(tx, ACTOR, "retention.chat_deleted", "", {
                "messages": deleted, "before": cutoff, "retention_days": days})
    report.chat_messages = deleted


_SCREENSHOTS = ("FROM support_request_attachments WHERE screenshot IS NOT NULL AND request_id IN"
                " (SELECT id FROM support_requests WHERE created_at < ?)")


async def _screenshots(db: Database, days: int, now: float, report: RetentionReport, dry_run: bool) -> None:
    cutoff = _cutoff(days, now)
    if cutoff is None:
        return
    if dry_run:
        row = await db.fetchone(f"SELECT COUNT(*) AS n {_SCREENSHOTS}", (cutoff,))
        report.screenshots = int(row["n"]) if row else 0
        return
    async with db.transaction() as tx:
        ids = [r["request_id"] for r in await tx.fetchall(f"SELECT request_id {_SCREENSHOTS}", (cutoff,))]
        deleted = 0
        for request_id in ids:
            deleted += await tx.execute("UPDATE support_request_attachments SET screenshot = NULL"
                                        " WHERE request_id = ? AND screenshot IS NOT NULL", (request_id,))
            await tx.execute("UPDATE support_requests SET has_screenshot = 0 WHERE id = ?", (request_id,))
        if deleted:
            await audit.append_in(tx, ACTOR, "retention.screenshots_deleted", "", {
                "screenshots": deleted, "before": cutoff, "retention_days": days})
    report.screenshots = deleted


async def _artifacts(db: Database, receiver: ArtifactReceiver | None, days: int, now: float,
                     report: RetentionReport, dry_run: bool) -> None:
    if receiver is None:
        return
    if not dry_run:
        report.artifacts = await receiver.expire(days, now)
        return
    from server.tasks import repository as tasks
    from server.tasks.artifacts import artifact_info

    cutoff = _cutoff(days, now)
    if cutoff is None:
        return
    for run in await tasks.runs_with_stored_artifacts(db):
        info = artifact_info(run)
        if info is not None and float(info.get("stored_at", now)) < cutoff:
            report.artifacts.append(run["id"])


async def _logins(db: Database, now: float, report: RetentionReport, dry_run: bool) -> None:
    if dry_run:
        return  # trimmed inside stored JSON sections: counted only by doing it
    from server.cmdb import personal

    purged = await personal.purge(db, now)
    report.login_sections_trimmed = purged.sections_trimmed + purged.sections_deleted
    report.login_changes_deleted = purged.changes_deleted
    if report.login_sections_trimmed or report.login_changes_deleted:
        await audit.append(db, ACTOR, "retention.logins_trimmed", "", {
            "sections_trimmed": purged.sections_trimmed, "sections_deleted": purged.sections_deleted,
            "changes_deleted": purged.changes_deleted})


async def _recording_was_deleted(db: Database, session_id: str) -> bool:
    """The session's recording was deleted on purpose (retention or a device purge), not lost in a crash."""
    row = await db.fetchone("SELECT device_id, recording_path, ended_at FROM sessions WHERE id = ?", (session_id,))
    if row is None or row["ended_at"] is None or row["recording_path"]:
        return False
    if await db.fetchone("SELECT device_id FROM device_tombstones WHERE device_id = ?", (row["device_id"],)):
        return True
    for record in await audit.recent(db, action="retention.recording_deleted", target=row["device_id"], limit=10000):
        with contextlib.suppress(ValueError, TypeError):
            if json.loads(record["details"]).get("session_id") == session_id:
                return True
    return False


async def _drop_stale_cache(db: Database, recordings_dir: Path, artifacts_dir: Path, report: RetentionReport) -> None:
    """With a shared store each node's directories are only a cache: drop this node's copies of recordings and
    bundles another node deleted (retention, purge). A recording the database never pointed at (a session cut
    short by a crash) is left alone."""
    from server.tasks.artifacts import expired_info

    streams = await asyncio.to_thread(lambda: list(recordings_dir.glob("*.hlrec")) if recordings_dir.is_dir() else [])
    for stream in streams:
        if await _recording_was_deleted(db, stream.stem):
            await delete_recording_files(None, stream.stem, recordings_dir, None)
            report.cached_files_dropped += 1
    bundles = await asyncio.to_thread(lambda: list(artifacts_dir.glob("*.tar.gz")) if artifacts_dir.is_dir() else [])
    for bundle in bundles:
        run_id = bundle.name.removesuffix(".tar.gz")
        run = await db.fetchone("SELECT id, details FROM task_runs WHERE id = ?", (run_id,))
        if run is None:
            continue
        with contextlib.suppress(ValueError, TypeError):
            purged = bool(json.loads(run["details"] or "{}").get("artifact", {}).get("purged"))
            if expired_info(run) is not None or purged:
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread(bundle.unlink)
                report.cached_files_dropped += 1


async def run_pass(db: Database, config: Any, now: float, *, store: ObjectStore | None,
                   receiver: ArtifactReceiver | None, dry_run: bool = False) -> RetentionReport:
    """Delete (or, ``dry_run``, list) everything past its retention period; each kind stands alone."""
    retention = config.retention
    data_dir = Path(config.data_dir)
    recordings_dir = Path(config.recordings_dir or data_dir / "recordings")
    report = RetentionReport()
    steps: list[tuple[str, Any]] = [
        ("recordings", lambda: _recordings(db, retention.recordings_days, now, recordings_dir, store, report,
                                           dry_run)),
        ("chat", lambda: _chat(db, retention.chat_days, now, report, dry_run)),
        ("screenshots", lambda: _screenshots(db, retention.screenshots_days, now, report, dry_run)),
        ("artifacts", lambda: _artifacts(db, receiver, config.task_artifact_retention_days, now, report, dry_run)),
        ("login history", lambda: _logins(db, now, report, dry_run))]
    if not dry_run and isinstance(store, JetStreamObjectStore):
        steps.append(("cached copies", lambda: _drop_stale_cache(db, recordings_dir, data_dir / "artifacts", report)))
    for name, step in steps:
        try:
            await step()
        except StoreUnavailable:
            raise  # no step can work: the pass fails once, logged once per outage by the loop
        except Exception:
            if dry_run:
                raise
            log.exception("retention step %r failed; the others ran", name)
    if not dry_run and (report.recordings or report.chat_messages or report.screenshots or report.artifacts):
        log.info("retention pass", extra={"recordings": len(report.recordings), "chat_messages": report.chat_messages,
                                          "screenshots": report.screenshots, "artifacts": len(report.artifacts)})
    return report
