"""The retention pass deletes exactly what is older than each period (times set in the rows), audits each
purge with counts, a second node's pass deletes nothing twice, and a dry run deletes nothing; purging a
device refuses a live one, clears a revoked one's data and keeps the audit chain intact."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from server import audit, devices
from server.config import RetentionConfig, ServerConfig
from server.lifecycle import purge, retention
from server.requests import repository as requests
from server.storage.objects import LocalDirStore
from server.store import Database
from tests.conftest import add_device

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400.0
NOW = 1_900_000_000.0


def _config(tmp_path: Path) -> ServerConfig:
    return replace(ServerConfig(data_dir=tmp_path), retention=RetentionConfig(recordings_days=30, chat_days=10,
                                                                              screenshots_days=20))


async def _session(db: Database, session_id: str, device_id: str, ended_at: float, recording: Path | None) -> None:
    await db.execute(
        "INSERT INTO sessions (id, device_id, group_name, technician_user, technician_name, technician_role,"
        " requested_mode, state, token_hash, token_cert_serial, token_expires_at, created_at, ended_at,"
        " recording_path) VALUES (?, ?, 'lab', 'tech', 'Tech', 'technician', 'view', 'ended', 'h', 's', 0, ?, ?, ?)",
        (session_id, device_id, ended_at - 60, ended_at, str(recording) if recording else None))
    if recording is not None:
        recording.parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".hlrec", ".json", ".cast"):
            recording.with_suffix(suffix).write_bytes(b"sealed")


async def _chat(db: Database, session_id: str, seq: int, at: float) -> None:
    await db.execute("INSERT INTO session_chat (session_id, seq, sender, name, text, at) VALUES (?, ?, 'user',"
                     " 'Ann', 'hello', ?)", (session_id, seq, at))


async def _request(db: Database, device_id: str, local_id: str, created_at: float) -> str:
    row, _ = await requests.open_request(db, requests.NewRequest(
        device_id=device_id, local_id=local_id, group_name="lab", requester="ann", summary="printer",
        details="", urgency="normal", screenshot=b"\x89PNG fake", diagnostics=[], attempt=None))
    await db.execute("UPDATE support_requests SET created_at = ? WHERE id = ?", (created_at, row["id"]))
    return str(row["id"])


async def _fixture(db: Database, tmp_path: Path) -> Path:
    rec = tmp_path / "recordings"
    await add_device(db, "dev-1", "lab")
    await _session(db, "old", "dev-1", NOW - 31 * DAY, rec / "old.hlrec")
    await _session(db, "new", "dev-1", NOW - 29 * DAY, rec / "new.hlrec")
    await _chat(db, "old", 1, NOW - 11 * DAY)
    await _chat(db, "old", 2, NOW - 11 * DAY)
    await _chat(db, "new", 1, NOW - 9 * DAY)
    await _request(db, "dev-1", "a" * 32, NOW - 21 * DAY)
    await _request(db, "dev-1", "b" * 32, NOW - 19 * DAY)
    return rec


async def _screenshots(db: Database) -> int:
    row = await db.fetchone("SELECT COUNT(*) AS n FROM support_request_attachments WHERE screenshot IS NOT NULL")
    return int(row["n"]) if row else -1


async def test_pass_deletes_exactly_what_is_older_and_audits_once(db: Database, tmp_path: Path) -> None:
    """30/10/20-day periods: the session ended 31 days ago loses its recording (row cleared, files gone, one
    audit record), the 11-day-old chat lines and the 21-day-old screenshot go; the newer ones stay. A dry
    run before deletes nothing; a second pass (another node) finds nothing and audits nothing."""
    rec = await _fixture(db, tmp_path)
    config = _config(tmp_path)
    store = LocalDirStore(rec, tmp_path / "artifacts")
    dry = await retention.run_pass(db, config, NOW, store=store, receiver=None, dry_run=True)
    assert (dry.recordings, dry.chat_messages, dry.screenshots) == (["old"], 2, 1)
    assert (rec / "old.hlrec").exists() and await _screenshots(db) == 2
    assert not [r for r in await audit.recent(db) if r["action"].startswith("retention.")]

    report = await retention.run_pass(db, config, NOW, store=store, receiver=None)
    assert (report.recordings, report.chat_messages, report.screenshots) == (["old"], 2, 1)
    assert not any(rec.glob("old.*")) and all((rec / f"new{s}").exists() for s in (".hlrec", ".json", ".cast"))
    rows = {r["id"]: r["recording_path"] for r in await db.fetchall("SELECT id, recording_path FROM sessions")}
    assert rows["old"] is None and rows["new"] == str(rec / "new.hlrec")
    chat = await db.fetchall("SELECT session_id, seq FROM session_chat ORDER BY session_id")
    assert [(r["session_id"], r["seq"]) for r in chat] == [("new", 1)]
    assert await _screenshots(db) == 1

    again = await retention.run_pass(db, config, NOW, store=store, receiver=None)
    assert (again.recordings, again.chat_messages, again.screenshots) == ([], 0, 0)
    records = [r for r in await audit.recent(db) if r["action"].startswith("retention.")]
    assert sorted(r["action"] for r in records) == ["retention.chat_deleted", "retention.recording_deleted",
                                                    "retention.screenshots_deleted"]
    details = {r["action"]: json.loads(r["details"]) for r in records}
    assert details["retention.chat_deleted"]["messages"] == 2
    assert details["retention.screenshots_deleted"]["screenshots"] == 1
    assert details["retention.recording_deleted"]["session_id"] == "old"
    assert (await audit.verify_chain(db)).ok


async def test_zero_keeps_forever(db: Database, tmp_path: Path) -> None:
    """With every period 0 nothing is deleted however old."""
    rec = await _fixture(db, tmp_path)
    config = replace(_config(tmp_path), retention=RetentionConfig(0, 0, 0))
    report = await retention.run_pass(db, config, NOW + 1000 * DAY, store=None, receiver=None)
    assert (report.recordings, report.chat_messages, report.screenshots) == ([], 0, 0)
    assert (rec / "old.hlrec").exists() and await _screenshots(db) == 2


async def test_purge_refuses_live_device_and_purges_revoked(db: Database, tmp_path: Path) -> None:
    """A device still active is refused (nothing deleted); once revoked its inventory, chat, recordings and
    screenshots go, the devices row stays as a tombstone (refused again), another device is untouched, and the
    audit log keeps every record plus device.purged, its chain verifying."""
    rec = await _fixture(db, tmp_path)
    await add_device(db, "dev-2", "lab")
    await _session(db, "other", "dev-2", NOW, rec / "other.hlrec")
    await _chat(db, "other", 1, NOW)
    for device in ("dev-1", "dev-2"):
        await db.execute("INSERT INTO inventory_sections (device_id, section, data, checksum, updated_at)"
                         " VALUES (?, 'os', '{}', 'c', 0)", (device,))
    store = LocalDirStore(rec, tmp_path / "artifacts")
    kwargs = {"actor": "admin", "recordings_dir": rec, "artifacts_dir": tmp_path / "artifacts", "store": store}
    with pytest.raises(purge.NotRevoked) as refused:
        await purge.purge_device(db, "dev-1", **kwargs)  # type: ignore[arg-type]
    assert refused.value.code == "device_not_revoked"
    assert (rec / "old.hlrec").exists()
    before = len(await audit.recent(db, limit=1000))
    assert await devices.revoke(db, "dev-1", actor="admin")
    counts = await purge.purge_device(db, "dev-1", **kwargs)  # type: ignore[arg-type]
    assert counts["inventory_sections"] == 1 and counts["session_chat"] == 3 and counts["recordings"] == 2
    assert counts["support_request_attachments"] == 2
    assert not any(rec.glob("old.*")) and not any(rec.glob("new.*")) and (rec / "other.hlrec").exists()
    left = await db.fetchall("SELECT device_id FROM inventory_sections")
    assert [r["device_id"] for r in left] == ["dev-2"]
    assert [r["session_id"] for r in await db.fetchall("SELECT session_id FROM session_chat")] == ["other"]
    tomb = await db.fetchone("SELECT status FROM devices WHERE id = 'dev-1'")
    assert tomb is not None and tomb["status"] == "revoked"
    with pytest.raises(purge.NotRevoked) as twice:
        await purge.purge_device(db, "dev-1", **kwargs)  # type: ignore[arg-type]
    assert twice.value.code == "already_purged"
    records = await audit.recent(db, limit=1000)
    assert len(records) == before + 2  # device.revoked + device.purged: nothing removed
    purged = [r for r in records if r["action"] == "device.purged"]
    assert len(purged) == 1 and purged[0]["target"] == "dev-1"
    assert json.loads(purged[0]["details"])["counts"]["session_chat"] == 3
    assert (await audit.verify_chain(db)).ok


async def test_cli_dry_run_prints_and_deletes_nothing(tmp_path: Path) -> None:
    """`helpline admin retention run --dry-run` names what would go; without it, it goes."""
    from server.store import open_database

    data = tmp_path / "data"
    data.mkdir()
    db = await open_database(f"sqlite:///{data / 'helpline.db'}")
    try:
        await add_device(db, "dev-1", "lab")
        await _session(db, "ancient", "dev-1", time.time() - 400 * DAY, data / "recordings" / "ancient.hlrec")
    finally:
        await db.close()
    cmd = [sys.executable, "-m", "helpline", "admin", "retention", "run", "--data", str(data)]
    dry = await asyncio.to_thread(subprocess.run, [*cmd, "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                                  timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "would delete" in dry.stdout and "recordings: 1 (ancient)" in dry.stdout
    assert (data / "recordings" / "ancient.hlrec").exists()
    real = await asyncio.to_thread(subprocess.run, cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert real.returncode == 0, real.stderr
    assert "recordings: 1 (ancient)" in real.stdout and not (data / "recordings" / "ancient.hlrec").exists()


async def test_cli_purge_needs_yes_and_a_revoked_device(tmp_path: Path) -> None:
    """`helpline admin device purge` without --yes does nothing (exit 2); on an active device it refuses (exit 1);
    on a revoked one it prints the counts."""
    from server.store import open_database

    data = tmp_path / "data"
    data.mkdir()
    db = await open_database(f"sqlite:///{data / 'helpline.db'}")
    try:
        await add_device(db, "dev-1", "lab")
    finally:
        await db.close()
    cmd = [sys.executable, "-m", "helpline", "admin", "device", "purge", "dev-1", "--data", str(data)]

    async def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(subprocess.run, [*cmd, *extra], cwd=ROOT, capture_output=True, text=True,
                                       timeout=120)

    assert (await run()).returncode == 2
    live = await run("--yes")
    assert live.returncode == 1 and "revoke the device first" in live.stderr
    db = await open_database(f"sqlite:///{data / 'helpline.db'}")
    try:
        assert await devices.revoke(db, "dev-1", actor="admin")
    finally:
        await db.close()
    done = await run("--yes")
    assert done.returncode == 0, done.stderr
    assert "purged dev-1" in done.stdout
    db = await open_database(f"sqlite:///{data / 'helpline.db'}")
    try:
        tomb = await db.fetchone("SELECT purged_by FROM device_tombstones WHERE device_id = 'dev-1'")
        assert tomb is not None and tomb["purged_by"].startswith("cli:")
        assert (await audit.verify_chain(db)).ok
    finally:
        await db.close()


class _DownDatabase:
    """A store in an outage: every call says so, as the backends translate connection failures."""

    def __getattr__(self, name: str) -> object:
        async def unavailable(*_args: object, **_kwargs: object) -> None:
            from server.store import StoreUnavailable

            raise StoreUnavailable("the database is unavailable: connection refused")

        return unavailable


async def test_a_database_outage_ends_the_pass_once_without_a_traceback_per_step(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With the store down no step can work: the pass stops at the first and raises StoreUnavailable (the loop logs
    one warning per outage); it used to log every step's failure with its traceback, five at every pass."""
    from server.store import StoreUnavailable

    with caplog.at_level("INFO", logger="server.lifecycle"), pytest.raises(StoreUnavailable):
        await retention.run_pass(_DownDatabase(), _config(tmp_path), NOW, store=None,  # type: ignore[arg-type]
                                 receiver=None)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
