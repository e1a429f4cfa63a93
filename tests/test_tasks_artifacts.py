"""Diagnostics bundles reach the server in chunks: sha256 checked, resumable, capped, downloadable with RUN_TASKS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import math
import ssl
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from agent.runtime import Agent
from certs import tls
from protocol.tasks import TaskArtifactBegin, TaskArtifactChunk
from server import audit
from server.api.context import AUTHENTICATORS
from server.auth.rights import Principal, Right
from server.store import Database
from server.tasks import repository, service
from server.tasks.artifacts import ArtifactReceiver, artifact_info
from server.tasks.feature import SCHEDULER
from tests.conftest import add_device
from tests.harness import console_url, enroll_agent, running_agent, running_server, wait_until
from tests.sealed_files import plain
from tests.tasks_helpers import authorize, make_org, pinned, run_of, signed_spec, submit, task_agent

ROOT = Path(__file__).resolve().parent.parent


#: The org whose approvers authorize the diagnostics tasks here.
ORG = make_org()

async def _as_header(request: aiohttp.web.Request) -> Principal | None:
    name = request.headers.get("X-Test-User")
    if name == "tech":
        return Principal("u1", "tech", "technician", {"lab": Right.RUN_TASKS})
    if name == "viewer":
        return Principal("u2", "viewer", "technician", {"lab": Right.VIEW_INVENTORY, "elsewhere": Right.RUN_TASKS})
    return None


def _small_chunks(agent: Agent) -> None:
    agent.tasks.poll_s = 0.05
    agent.tasks.uploader.chunk_size = 4096  # several chunks even for a small bundle


async def test_diagnostics_bundle_arrives_verified_and_downloads_with_the_right(tmp_path: Path) -> None:
    """A real agent's diagnostics bundle is stored with a matching sha256, is a tar.gz with inventory and health,
    downloads via the API (RUN_TASKS only, audited) and via `task show --artifact-out`."""
    data = tmp_path / "srv"
    async with running_server(data) as server:
        server.console_app[SCHEDULER].tick_s = 0.1
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        async with task_agent(server, state, ORG, setup=_small_chunks):
            document = authorize(ORG, devices=[state.device_id], action="diagnostics", params={"log_lines": 0, "include_inventory": True})
            task = await submit(server, document, device=state.device_id)

            async def stored() -> bool:
                return artifact_info(await run_of(server, task["id"])) is not None

            await wait_until(stored, timeout=30, what="artifact stored")
        run = await run_of(server, task["id"])
        info = artifact_info(run)
        assert info is not None and run["status"] == "succeeded"
        details = json.loads(run["details"])
        assert info["sha256"] == details["sha256"] and info["size"] == details["size"] > 4096
        stored_file = data / "artifacts" / f"{run['id']}.tar.gz"
        assert hashlib.sha256(plain(stored_file, partial=False)).hexdigest() == info["sha256"]  # sealed at rest
        assert "task.artifact.stored" in [r["action"] for r in await audit.recent(server.db)]

        server.console_app[AUTHENTICATORS].append(_as_header)
        ctx: ssl.SSLContext = tls.agent_client_context(server.pki.ca_pem, None, None)
        url = f"{console_url(server)}/api/v1/tasks/runs/{run['id']}/artifact"
        async with aiohttp.ClientSession() as http:
            async with http.get(url, ssl=ctx, headers={"X-Test-User": "viewer"}) as resp:
                assert resp.status == 403
            async with http.get(url, ssl=ctx) as resp:
                assert resp.status == 401
            assert not await audit.recent(server.db, action="task.artifact.download")
            async with http.get(url, ssl=ctx, headers={"X-Test-User": "tech"}) as resp:
                assert resp.status == 200
                body = await resp.read()
        assert hashlib.sha256(body).hexdigest() == info["sha256"]
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            names = set(tar.getnames())
            assert {"inventory.json", "health.json"} <= names
            health = tar.extractfile("health.json")
            assert health is not None and "memory_percent" in json.loads(health.read())
        downloads = await audit.recent(server.db, action="task.artifact.download")
        assert [(r["actor"], r["target"]) for r in downloads] == [("tech", run["id"])]

        out = tmp_path / "bundle.tar.gz"
        cli = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "helpline", "admin", "task", "show", task["id"], "--data", str(data),
            "--artifact-out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        assert out.read_bytes() == body
        assert len(await audit.recent(server.db, action="task.artifact.download")) == 2


# --- the receiver on its own (both engines) -------------------------------------------------


async def _diag_run(database: Database) -> str:
    device = await add_device(database, "dev-1", "lab")
    task = await service.create_task(database, await signed_spec(database, action="diagnostics", device=device),
                                     actor="admin1")
    (run,) = await repository.runs_of_task(database, task["id"])
    return str(run["id"])


async def _send_all(receiver: ArtifactReceiver, run_id: str, payload: bytes, *, sha: str, size: int | None = None,
                    chunk: int = 1000) -> str:
    size = len(payload) if size is None else size
    ack = await receiver.begin("dev-1", TaskArtifactBegin(run_id=run_id, size=size, sha256=sha, chunk_size=chunk))
    total = max(1, math.ceil(size / chunk))
    while ack.status == "continue":
        piece = payload[ack.next_index * chunk:(ack.next_index + 1) * chunk]
        ack = await receiver.chunk("dev-1", TaskArtifactChunk(run_id=run_id, index=ack.next_index, total=total,
                                                              data=base64.b64encode(piece).decode()))
    return ack.status


async def test_tampered_stream_is_refused_and_nothing_stored(db: Database, tmp_path: Path) -> None:
    """Chunks that do not hash to the announced sha256 are refused, discarded and audited; the run stays bare."""
    run_id = await _diag_run(db)
    receiver = ArtifactReceiver(lambda: db, tmp_path / "artifacts")
    good = bytes(range(256)) * 20
    evil = good[:-1] + b"X"
    assert await _send_all(receiver, run_id, evil, sha=hashlib.sha256(good).hexdigest()) == "refused"
    run = await repository.get_run(db, run_id)
    assert run is not None and artifact_info(run) is None
    assert list((tmp_path / "artifacts").iterdir()) == []
    assert len(await audit.recent(db, action="task.artifact.refused")) == 1


async def test_oversized_and_overlong_streams_are_refused(db: Database, tmp_path: Path) -> None:
    """An artifact over the cap is refused at begin; a chunk longer than announced is refused and discarded."""
    run_id = await _diag_run(db)
    receiver = ArtifactReceiver(lambda: db, tmp_path / "artifacts", max_bytes=5000)
    big = b"a" * 6000
    ack = await receiver.begin("dev-1", TaskArtifactBegin(run_id=run_id, size=len(big),
                                                          sha256=hashlib.sha256(big).hexdigest(), chunk_size=1000))
    assert ack.status == "refused" and "exceeds" in ack.reason
    small = b"b" * 1500
    sha = hashlib.sha256(small).hexdigest()
    ack = await receiver.begin("dev-1", TaskArtifactBegin(run_id=run_id, size=1500, sha256=sha, chunk_size=1000))
    assert ack.status == "continue" and ack.next_index == 0
    ack = await receiver.chunk("dev-1", TaskArtifactChunk(run_id=run_id, index=0, total=2,
                                                          data=base64.b64encode(b"b" * 1001).decode()))
    assert ack.status == "refused"
    run = await repository.get_run(db, run_id)
    assert run is not None and artifact_info(run) is None and list((tmp_path / "artifacts").iterdir()) == []


async def test_upload_resumes_and_a_stored_artifact_is_never_replaced(db: Database, tmp_path: Path) -> None:
    """A new begin after a dropped connection resumes at the next chunk; once stored, another upload changes nothing;
    another device cannot upload for this run."""
    run_id = await _diag_run(db)
    receiver = ArtifactReceiver(lambda: db, tmp_path / "artifacts")
    payload = b"0123456789" * 250
    sha = hashlib.sha256(payload).hexdigest()
    ack = await receiver.begin("dev-1", TaskArtifactBegin(run_id=run_id, size=len(payload), sha256=sha,
                                                          chunk_size=1000))
    ack = await receiver.chunk("dev-1", TaskArtifactChunk(run_id=run_id, index=0, total=3,
                                                          data=base64.b64encode(payload[:1000]).decode()))
    assert ack.status == "continue" and ack.next_index == 1
    resumed = await receiver.begin("dev-1", TaskArtifactBegin(run_id=run_id, size=len(payload), sha256=sha,
                                                              chunk_size=1000))
    assert resumed.status == "continue" and resumed.next_index == 1
    stranger = await receiver.begin("dev-2", TaskArtifactBegin(run_id=run_id, size=1, sha256=sha, chunk_size=1000))
    assert stranger.status == "refused"
    assert await _send_all(receiver, run_id, payload, sha=sha) == "stored"
    stored = receiver.path_of(run_id).read_bytes()
    assert stored == payload
    other = b"z" * 10
    assert await _send_all(receiver, run_id, other, sha=hashlib.sha256(other).hexdigest()) == "stored"
    assert receiver.path_of(run_id).read_bytes() == payload
    run = await repository.get_run(db, run_id)
    assert run is not None and (artifact_info(run) or {}).get("sha256") == sha
    assert len(await audit.recent(db, action="task.artifact.stored")) == 1
    assert time.time() >= (artifact_info(run) or {}).get("stored_at", 0)


async def test_upload_cut_off_resumes_after_agent_restart(tmp_path: Path) -> None:
    """The server stops acking after a few chunks; after the agent restarts, the upload resumes at the next chunk
    (not from zero) and the bundle arrives intact."""
    async with running_server(tmp_path / "srv") as server:
        server.console_app[SCHEDULER].tick_s = 0.1
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        indices: list[int] = []
        stalled = asyncio.Event()
        original = server.agent_handlers.get(TaskArtifactChunk)
        assert original is not None

        async def flaky(conn: Any, message: TaskArtifactChunk) -> None:
            if len(indices) >= 3 and not stalled.is_set():
                stalled.set()
                return  # no ack: the agent's upload hangs until it is stopped
            indices.append(message.index)
            await original(conn, message)

        server.agent_handlers.replace(TaskArtifactChunk, flaky)
        async with task_agent(server, state, ORG, setup=_small_chunks):
            document = authorize(ORG, devices=[state.device_id], action="diagnostics", params={"log_lines": 0, "include_inventory": True})
            task = await submit(server, document, device=state.device_id)
            await asyncio.wait_for(stalled.wait(), timeout=30)
        assert indices == [0, 1, 2]
        assert artifact_info(await run_of(server, task["id"])) is None
        stalled.clear()
        indices.append(-1)  # marks the restart; from here every chunk is acked
        stalled.set()

        async def stored() -> bool:
            return artifact_info(await run_of(server, task["id"])) is not None

        async with running_agent(state, pinned(state, ORG), setup=_small_chunks):
            await wait_until(stored, timeout=30, what="artifact stored after restart")
        assert indices[:5] == [0, 1, 2, -1, 3]
        run = await run_of(server, task["id"])
        info = artifact_info(run)
        assert info is not None
        stored_file = tmp_path / "srv" / "artifacts" / f"{run['id']}.tar.gz"
        assert hashlib.sha256(plain(stored_file, partial=False)).hexdigest() == info["sha256"]  # resumed, sealed


async def test_console_task_page_offers_the_bundle_for_download(tmp_path: Path) -> None:
    """The task page (Chromium) shows a download link for the stored bundle; the file it saves matches the sha256."""
    from tests.test_accounts_support import make_user
    from tests.test_console_support import console_browser

    async with running_server(tmp_path / "srv") as server:
        server.console_app[SCHEDULER].tick_s = 0.1
        tech = await make_user(server, "tina", "technician", groups={"lab": None})
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        async with task_agent(server, state, ORG, setup=_small_chunks):
            document = authorize(ORG, devices=[state.device_id], action="diagnostics", params={"log_lines": 0, "include_inventory": False})
            task = await submit(server, document, device=state.device_id)

            async def stored() -> bool:
                return artifact_info(await run_of(server, task["id"])) is not None

            await wait_until(stored, timeout=30, what="artifact stored")
        info = artifact_info(await run_of(server, task["id"]))
        assert info is not None
        async with console_browser(server) as console:
            page = console.page
            await console.login(tech, code=tech.code(1))
            await page.goto(f"{console.base}/#/tasks/{task['id']}")
            link = page.locator("a.artifact-link")
            await link.wait_for(timeout=15_000)
            async with page.expect_download() as waiting:
                await link.click()
            download = await waiting.value
            saved = tmp_path / "saved.tar.gz"
            await download.save_as(saved)
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == info["sha256"]
        assert [r["actor"] for r in await audit.recent(server.db, action="task.artifact.download")] == ["tina"]
