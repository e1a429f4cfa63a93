"""Shared storage on a real nats-server (JetStream object store): sealed bytes only, and a recording made
while the node had it on disk plays after the node's recordings directory is wiped (restart: the file is
fetched back from NATS), as it would on another node."""

from __future__ import annotations

import shutil
import ssl
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from certs import tls
from server import audit
from server.api.context import AUTHENTICATORS
from server.auth.rights import Principal, Right
from server.lifecycle.feature import share_recording
from server.storage.keys import storage_key_of
from server.storage.objects import JetStreamObjectStore, ObjectStore, from_config
from server.storage.sealed import SealedWriter, StorageKey
from server.store import Database
from tests.conftest import add_device
from tests.harness import console_url, running_server, server_config
from tests.nats_objects import nats_server

PLAINTEXT = b"screen update bytes that must never reach NATS in the clear " * 200


@pytest.fixture
def nats_url(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = tmp_path / "nats"
    store.mkdir()
    with nats_server(store) as url:
        yield url


def _sealed(path: Path, key: StorageKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = SealedWriter(path, key)
    writer.append(PLAINTEXT)
    writer.close()


async def test_jetstream_store_round_trip_holds_sealed_bytes(tmp_path: Path, nats_url: str) -> None:
    """put/exists/list/fetch/delete against nats-server; what NATS stores is the sealed file byte for byte
    (no plaintext in its store directory), and a name outside recordings/ and artifacts/ is refused."""
    config = server_config(tmp_path / "srv", nats_url=nats_url, object_store="nats")
    store = from_config(config)
    assert isinstance(store, JetStreamObjectStore)
    key = StorageKey(b"k" * 32)
    source = tmp_path / "s-1.hlrec"
    _sealed(source, key)
    try:
        assert not await store.exists("recordings/s-1.hlrec")
        await store.put("recordings/s-1.hlrec", source)
        await store.put("artifacts/run-1.tar.gz", source)
        assert await store.exists("recordings/s-1.hlrec")
        assert await store.list("recordings/") == ["recordings/s-1.hlrec"]
        dest = tmp_path / "elsewhere" / "s-1.hlrec"
        assert await store.fetch("recordings/s-1.hlrec", dest)
        assert dest.read_bytes() == source.read_bytes()
        assert (dest.stat().st_mode & 0o777) == 0o600
        assert await store.delete("recordings/s-1.hlrec")
        assert not await store.exists("recordings/s-1.hlrec")
        assert not await store.fetch("recordings/s-1.hlrec", tmp_path / "gone.hlrec")
        assert await store.list("") == ["artifacts/run-1.tar.gz"]
        with pytest.raises(ValueError):
            await store.put("recordings/../../etc/passwd", source)
        with pytest.raises(ValueError):
            await store.put("other/x", source)
    finally:
        await store.close()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "nats").rglob("*") if p.is_file())
    assert PLAINTEXT[:64] not in stored


async def _insert_recorded_session(db: Database, session_id: str, path: Path, ended_at: float) -> None:
    await add_device(db, "dev-1", "lab")
    await db.execute(
        "INSERT INTO sessions (id, device_id, group_name, technician_user, technician_name, technician_role,"
        " requested_mode, state, token_hash, token_cert_serial, token_expires_at, created_at, ended_at,"
        " recording_path) VALUES (?, 'dev-1', 'lab', 'tech', 'Tech', 'technician', 'view', 'ended', 'h', 's', 0,"
        " ?, ?, ?)", (session_id, ended_at - 60, ended_at, str(path)))


async def test_recording_plays_from_the_store_after_local_files_are_gone(tmp_path: Path, nats_url: str) -> None:
    """The node's session-end hook puts the sealed .hlrec/.json into NATS; with the node's recordings
    directory wiped and the node restarted, the API fetches it back and streams the same plaintext (audited)."""
    data = tmp_path / "srv"
    recordings = data / "recordings"
    session_id = "sess-abc"
    async with running_server(data, nats_url=nats_url, object_store="nats") as server:
        key = storage_key_of(server.config)
        assert key is not None
        stream = recordings / f"{session_id}.hlrec"
        _sealed(stream, key)
        stream.with_suffix(".json").write_text('{"width": 640}')
        await _insert_recorded_session(server.db, session_id, stream, time.time())
        from server.sessions.recordings_api import OBJECTS

        store: ObjectStore = server.console_app[OBJECTS]
        assert await share_recording(store, session_id, stream) == 2
        assert await store.list("recordings/") == [f"recordings/{session_id}.hlrec", f"recordings/{session_id}.json"]
    shutil.rmtree(recordings)
    async with running_server(data, nats_url=nats_url, object_store="nats",
                              console_port=server.config.console_port, agent_port=server.config.agent_port) as again:

        async def auditor(request: web.Request) -> Principal | None:
            return Principal("u2", "auditor", "auditor", {"lab": Right.VIEW_RECORDINGS})

        again.console_app[AUTHENTICATORS].append(auditor)
        ctx: ssl.SSLContext = tls.agent_client_context(again.pki.ca_pem, None, None)
        async with aiohttp.ClientSession() as http:
            url = f"{console_url(again)}/api/v1/sessions/{session_id}/recording"
            async with http.get(f"{url}/data", ssl=ctx) as resp:
                assert resp.status == 200, await resp.text()
                assert await resp.read() == PLAINTEXT
            async with http.get(url, ssl=ctx) as resp:
                assert resp.status == 200
                info = await resp.json()
        assert (recordings / f"{session_id}.hlrec").is_file()  # fetched back, still sealed on disk
        assert PLAINTEXT[:64] not in (recordings / f"{session_id}.hlrec").read_bytes()
        assert "640" in str(info)
        assert [r["target"] for r in await audit.recent(again.db, action="session.recording.view")] == ["dev-1"]


async def test_other_nodes_cached_copies_go_after_retention(db: Database, tmp_path: Path, nats_url: str) -> None:
    """Node B's pass deletes an old recording (row, its files, the NATS objects); node A's pass then drops A's
    cached copy of it, and leaves alone a file no session row ever pointed at (a crash's partial recording)."""
    from dataclasses import replace

    from server.config import RetentionConfig
    from server.lifecycle import retention

    config_b = replace(server_config(tmp_path / "b", nats_url=nats_url, object_store="nats"),
                       retention=RetentionConfig(recordings_days=30))
    config_a = replace(config_b, data_dir=tmp_path / "a")
    key = StorageKey(b"k" * 32)
    now = time.time()
    on_b = tmp_path / "b" / "recordings" / "old.hlrec"
    _sealed(on_b, key)
    await _insert_recorded_session(db, "old", on_b, now - 31 * 86400)
    await db.execute("INSERT INTO sessions (id, device_id, group_name, technician_user, technician_name,"
                     " technician_role, requested_mode, state, token_hash, token_cert_serial, token_expires_at,"
                     " created_at, ended_at) VALUES ('crashed', 'dev-1', 'lab', 't', 'T', 'technician', 'view',"
                     " 'ended', 'h', 's', 0, ?, ?)", (now - 40 * 86400, now - 40 * 86400))
    store_b, store_a = from_config(config_b), from_config(config_a)
    try:
        assert await share_recording(store_b, "old", on_b) == 1
        cached = tmp_path / "a" / "recordings" / "old.hlrec"
        assert await store_a.fetch("recordings/old.hlrec", cached)
        orphan = tmp_path / "a" / "recordings" / "crashed.hlrec"
        _sealed(orphan, key)
        report_b = await retention.run_pass(db, config_b, now, store=store_b, receiver=None)
        assert report_b.recordings == ["old"] and not on_b.exists()
        assert not await store_b.exists("recordings/old.hlrec")
        assert cached.exists()
        report_a = await retention.run_pass(db, config_a, now, store=store_a, receiver=None)
        assert report_a.recordings == [] and report_a.cached_files_dropped == 1
        assert not cached.exists() and orphan.exists()
    finally:
        await store_a.close()
        await store_b.close()


async def test_concurrent_fetches_of_one_object_each_get_it(tmp_path: Path, nats_url: str) -> None:
    """Several fetches of the same object into the same place at once (two requests for one recording on a
    node without it): each writes its own temporary file, all succeed, the file is whole, no temp is left."""
    import asyncio
    import os

    store = from_config(server_config(tmp_path / "srv", nats_url=nats_url, object_store="nats"))
    source = tmp_path / "big.hlrec"
    source.write_bytes(os.urandom(4 * 1024 * 1024))
    dest = tmp_path / "cache" / "big.hlrec"
    try:
        await store.put("recordings/big.hlrec", source)
        assert await asyncio.gather(*(store.fetch("recordings/big.hlrec", dest) for _ in range(4))) == [True] * 4
        assert dest.read_bytes() == source.read_bytes()
        assert sorted(p.name for p in dest.parent.iterdir()) == ["big.hlrec"]
    finally:
        await store.close()


async def test_an_unreachable_nats_is_an_object_store_error_quickly(tmp_path: Path) -> None:
    """NATS down: the store raises ObjectStoreError (callers answer 503 / retry), not the bus's RuntimeError,
    within the short connect timeout; the next call fails at once instead of waiting again."""
    import time

    from server.storage.objects import CONNECT_TIMEOUT_S, ObjectStoreError, ensure_local
    from tests.procs import free_port

    store = from_config(server_config(tmp_path / "srv", nats_url=f"nats://127.0.0.1:{free_port()}",
                                      object_store="nats"))
    try:
        started = time.monotonic()
        with pytest.raises(ObjectStoreError):
            await store.exists("recordings/s-1.hlrec")
        assert time.monotonic() - started < CONNECT_TIMEOUT_S + 5
        started = time.monotonic()
        assert not await ensure_local(store, "recordings/s-1.hlrec", tmp_path / "s-1.hlrec")
        assert time.monotonic() - started < 1.0
    finally:
        await store.close()
