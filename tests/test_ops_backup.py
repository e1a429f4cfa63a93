"""The recovery drill: backup of a running server, the data directory destroyed, restore, the same
agent reconnects with its certificate and the data is there. And what restore refuses."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from server import audit, devices
from server.ops.backup import BackupError, backup, restore
from tests.harness import enroll_agent, running_agent, running_server, server_config, wait_until

ROOT = Path(__file__).resolve().parent.parent


def helpline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "helpline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


async def test_recovery_drill(tmp_path: Path) -> None:
    """Start, enroll, create data, back up live, destroy, restore, the same agent reconnects; data and chain intact."""
    data, archive = tmp_path / "data", tmp_path / "backup.tar.gz"
    async with running_server(data) as server:
        if not server.config.db_url.startswith("sqlite"):
            pytest.skip("the drill's CLI half runs on the data directory's SQLite (PostgreSQL: pg_dump, see README)")
        ports = {"agent_port": server.agent_port, "console_port": server.console_port}
        state = await enroll_agent(server, tmp_path / "agent")
        async with running_agent(state):
            await wait_until(lambda: _online(server, state.device_id), timeout=60, what="the agent online")
            marker = await audit.append(server.db, "user:drill", "drill.marker", state.device_id, {"n": 1})
            done = await asyncio.to_thread(helpline, "admin", "backup", str(archive), "--data", str(data))
            assert done.returncode == 0, done.stderr
            assert "database:" in done.stderr and "archive:" in done.stderr  # progress on the way
            assert oct(archive.stat().st_mode & 0o777) == "0o600"
            refused = await asyncio.to_thread(helpline, "admin", "restore", str(archive), "--data", str(data))
            assert refused.returncode == 1 and "running" in refused.stderr, refused.stderr
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == "manifest.json" and "database/helpline.db" in names and "pki/server.key" in names
    assert not any(n.endswith("ca.key") for n in names), names  # never a root key

    shutil.rmtree(data)
    done = await asyncio.to_thread(helpline, "admin", "restore", str(archive), "--data", str(data))
    assert done.returncode == 0, done.stderr
    again = await asyncio.to_thread(helpline, "admin", "restore", str(archive), "--data", str(data))
    assert again.returncode == 1 and "--replace" in again.stderr

    async with running_server(data, **ports) as server:
        async with running_agent(state):  # the same state directory: its key and certificate
            await wait_until(lambda: _online(server, state.device_id), timeout=60, what="the agent back online")
        rows = await audit.recent(server.db, action="drill.marker")
        assert [r["seq"] for r in rows] == [marker]
        report = await audit.verify_with_anchor(server.db)
        assert report.ok and report.anchor is not None and report.anchor.seq >= marker, report


async def _online(server, device_id: str) -> bool:  # type: ignore[no-untyped-def]
    row = await devices.get(server.db, device_id)
    return row is not None and bool(row["online"])


def _rewrite(archive: Path, target: Path, change) -> None:  # type: ignore[no-untyped-def]
    with tarfile.open(archive) as src, tarfile.open(target, "w:gz") as dst:
        for info in src:
            data = src.extractfile(info).read()  # type: ignore[union-attr]
            data = change(info.name, data)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


async def test_restore_refuses_a_damaged_or_foreign_archive(tmp_path: Path) -> None:
    """A changed byte fails its checksum; another version's backup is refused; neither writes anything."""
    async with running_server(tmp_path / "data") as server:
        config = server.config
        if not config.db_url.startswith("sqlite"):
            pytest.skip("SQLite path")
    archive = tmp_path / "b.tar.gz"
    await asyncio.to_thread(backup, config, archive)
    target = server_config(tmp_path / "fresh")
    shutil.rmtree(tmp_path / "fresh" / "pki")

    damaged = tmp_path / "damaged.tar.gz"
    _rewrite(archive, damaged, lambda name, data: data + b"x" if name == "pki/server.pem" else data)
    with pytest.raises(BackupError, match="checksum"):
        await asyncio.to_thread(restore, target, damaged)

    foreign = tmp_path / "foreign.tar.gz"

    def older(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        return json.dumps({**json.loads(data), "helpline_version": "0.0.1"}).encode()

    _rewrite(archive, foreign, older)
    with pytest.raises(BackupError, match="same version"):
        await asyncio.to_thread(restore, target, foreign)
    assert not (tmp_path / "fresh" / "helpline.db").exists() and not (tmp_path / "fresh" / "pki").exists()


async def test_postgresql_backup_and_restore(tmp_path: Path) -> None:
    """PostgreSQL through pg_dump/pg_restore: the schema wiped and the data directory gone, restore brings both back."""
    import asyncpg

    from tests.pg_cluster import private_cluster

    assert shutil.which("pg_dump") and shutil.which("pg_restore"), "PostgreSQL's client tools: scripts/setup.sh"
    data, archive = tmp_path / "data", tmp_path / "pg.tar.gz"
    with private_cluster() as cluster:
        async with running_server(data, database_url=cluster.url) as server:
            marker = await audit.append(server.db, "user:drill", "drill.marker", "pg", {"n": 2})
            config = server.config
            manifest = await asyncio.to_thread(backup, config, archive)
        assert manifest["engine"] == "postgresql" and "database/helpline.pgdump" in manifest["files"]
        # A fresh host (no data directory) on the live shared database: refused without --replace.
        shutil.rmtree(data)
        with pytest.raises(BackupError, match="--replace"):
            await asyncio.to_thread(restore, config, archive)
        conn = await asyncpg.connect(cluster.url)
        try:
            assert await conn.fetchval("SELECT COUNT(*) FROM audit_log WHERE action = 'drill.marker'") == 1
        finally:
            await conn.close()
        conn = await asyncpg.connect(cluster.url)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        finally:
            await conn.close()
        shutil.rmtree(data)
        await asyncio.to_thread(restore, config, archive)
        async with running_server(data, database_url=cluster.url) as server:
            rows = await audit.recent(server.db, action="drill.marker")
            assert [r["seq"] for r in rows] == [marker]
            assert (await audit.verify_with_anchor(server.db)).ok
        shutil.rmtree(data)  # over a live database with --replace: allowed
        await asyncio.to_thread(restore, config, archive, replace=True)


def test_a_server_started_during_a_restore_refuses_to_start(tmp_path: Path) -> None:
    """The running-server lock is taken before the database opens and never waited for: while a restore holds
    it the server exits 1 saying so (it would otherwise serve a SQLite file being swapped); afterwards it starts
    and then holds it, so a restore is refused."""
    from server.ops.lock import ServerRunning, exclusive
    from tests.procs import free_port, spawn, wait_for_port

    data = tmp_path / "data"
    assert helpline("certs", "init", "--dir", str(data / "pki"), "--server-name", "localhost",
                    "--discard-root").returncode == 0
    args = ("server", "--data", str(data), "--host", "127.0.0.1", "--agent-port", str(free_port()),
            "--console-port", str(console := free_port()))
    with exclusive(data):
        refused = helpline(*args)
        assert refused.returncode == 1 and "a restore is running" in refused.stderr, refused.stderr
        assert not (data / "helpline.db").exists()
    with spawn(*args, log=tmp_path / "server.log") as proc:
        wait_for_port(console, proc, timeout=120)
        with pytest.raises(ServerRunning), exclusive(data):
            pass


def test_sqlite_backup_finishes_while_another_connection_keeps_writing(tmp_path: Path) -> None:
    """A busy server writes all the time: the snapshot must still finish (a stepped backup restarts whenever
    another connection writes between steps) and hold the rows committed before it began."""
    import os
    import sqlite3
    import threading
    import time

    config = server_config(tmp_path / "data")
    path = tmp_path / "data" / "helpline.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
    setup.execute("INSERT INTO schema_migrations VALUES (1)")
    setup.execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB)")
    setup.executemany("INSERT INTO filler (data) VALUES (?)", ((os.urandom(4000),) for _ in range(12_000)))  # ~48 MB
    setup.execute("CREATE TABLE busy (id INTEGER PRIMARY KEY, at REAL)")
    setup.commit()
    setup.close()

    stop, writes = threading.Event(), [0]

    def writer() -> None:
        conn = sqlite3.connect(path, timeout=30)
        conn.execute("PRAGMA synchronous=OFF")  # commits as fast as they come: no stall for a stepped copy to slip into
        deadline = time.monotonic() + 90  # the old stepped backup finished only after this
        while not stop.is_set() and time.monotonic() < deadline:
            conn.execute("INSERT INTO busy (at) VALUES (?)", (time.time(),))
            conn.commit()
            writes[0] += 1
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        started = time.monotonic()
        while writes[0] < 10:  # the writer is going before the backup starts (polled, with a deadline)
            assert time.monotonic() - started < 60, "the writer never wrote"
            time.sleep(0.01)
        before = writes[0]
        manifest = backup(config, tmp_path / "b.tar.gz")
        during = writes[0] - before
        assert not stop.is_set() and thread.is_alive(), "the backup only finished once the writer gave up"
    finally:
        stop.set()
        thread.join(timeout=60)
    assert manifest["migrations"] == [1] and during > 0
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        member = tar.extractfile("database/helpline.db")
        assert member is not None
        (tmp_path / "helpline.db").write_bytes(member.read())
    snap = sqlite3.connect(tmp_path / "helpline.db")
    assert snap.execute("SELECT COUNT(*) FROM filler").fetchone()[0] == 12_000
    assert snap.execute("SELECT COUNT(*) FROM busy").fetchone()[0] >= before
    snap.close()
