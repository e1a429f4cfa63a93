"""Diagnostics bundles are deleted after the retention period by the scheduler (injected clock), audited,
recorded on the run, and a download then answers 410 (API) or says why (CLI)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from certs import tls
from protocol.tasks import TaskArtifactBegin
from server import audit
from server.api.context import AUTHENTICATORS
from server.auth.rights import Principal, Right
from server.store import Database
from server.tasks import repository, service
from server.tasks.artifacts import ArtifactReceiver, artifact_info, expired_info
from server.tasks.feature import ARTIFACTS, SCHEDULER
from tests.conftest import add_device
from tests.harness import console_url, running_server, wait_until
from tests.tasks_helpers import signed_spec
from tests.test_tasks_artifacts import _send_all

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400.0
PAYLOAD = b"diagnostics " * 300


async def _stored_run(db: Database, receiver: ArtifactReceiver) -> tuple[str, float]:
    device = await add_device(db, "dev-1", "lab")
    task = await service.create_task(db, await signed_spec(db, action="diagnostics", device=device), actor="admin1")
    (run,) = await repository.runs_of_task(db, task["id"])
    assert await _send_all(receiver, run["id"], PAYLOAD, sha=hashlib.sha256(PAYLOAD).hexdigest()) == "stored"
    stored = await repository.get_run(db, run["id"])
    assert stored is not None
    return str(run["id"]), float((artifact_info(stored) or {})["stored_at"])


async def test_bundle_expires_after_retention_once_and_is_not_uploaded_again(db: Database, tmp_path: Path) -> None:
    """Kept until the retention period ends, then the file is deleted, the run records the expiry, it is audited
    once, and the agent cannot upload it again; retention 0 keeps bundles forever."""
    receiver = ArtifactReceiver(lambda: db, tmp_path / "artifacts")
    run_id, stored_at = await _stored_run(db, receiver)
    path = receiver.path_of(run_id)
    assert await receiver.expire(0, stored_at + 1000 * DAY) == []
    assert await receiver.expire(30, stored_at + 29 * DAY) == []
    assert path.exists()
    assert await receiver.expire(30, stored_at + 31 * DAY) == [run_id]
    assert not path.exists()
    run = await repository.get_run(db, run_id)
    assert run is not None and artifact_info(run) is None
    gone = expired_info(run)
    assert gone is not None and gone["expired_at"] == stored_at + 31 * DAY and gone["retention_days"] == 30
    assert gone["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    assert await receiver.expire(30, stored_at + 32 * DAY) == []
    records = await audit.recent(db, action="task.artifact.expired")
    assert [(r["actor"], r["target"]) for r in records] == [("scheduler", run_id)]
    again = await receiver.begin("dev-1", TaskArtifactBegin(run_id=run_id, size=len(PAYLOAD),
                                                            sha256=hashlib.sha256(PAYLOAD).hexdigest(),
                                                            chunk_size=1000))
    assert again.status == "refused" and "expired" in again.reason
    assert (await audit.verify_chain(db)).ok


async def test_scheduler_expires_bundles_and_download_answers_410(tmp_path: Path) -> None:
    """With a 7-day retention the scheduler's periodic work (clock moved 8 days on) deletes the bundle; the
    API then answers 410 with a clear message and `task show --artifact-out` explains it too."""
    data = tmp_path / "srv"
    async with running_server(data, task_artifact_retention_days=7) as server:
        scheduler = server.console_app[SCHEDULER]
        run_id, stored_at = await _stored_run(server.db, server.console_app[ARTIFACTS])
        assert (data / "artifacts" / f"{run_id}.tar.gz").exists()
        scheduler.tick_s = 0.05
        scheduler.artifact_sweep_s = 0.0
        scheduler.clock = lambda: stored_at + 6 * DAY
        scheduler.wake.set()
        await wait_until(lambda: scheduler._last_sweep == stored_at + 6 * DAY, timeout=10, what="a sweep at day 6")
        assert (data / "artifacts" / f"{run_id}.tar.gz").exists()
        scheduler.clock = lambda: stored_at + 8 * DAY
        scheduler.wake.set()

        async def expired() -> bool:
            run = await repository.get_run(server.db, run_id)
            return run is not None and expired_info(run) is not None

        await wait_until(expired, timeout=10, what="bundle expired by the scheduler")
        assert not (data / "artifacts" / f"{run_id}.tar.gz").exists()
        run = await repository.get_run(server.db, run_id)
        assert run is not None and json.loads(run["details"])["artifact"]["stored"] is False

        async def as_header(request: web.Request) -> Principal | None:
            if request.headers.get("X-Test-User") == "tech":
                return Principal("u1", "tech", "technician", {"lab": Right.RUN_TASKS})
            return None

        server.console_app[AUTHENTICATORS].append(as_header)
        ctx: ssl.SSLContext = tls.agent_client_context(server.pki.ca_pem, None, None)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{console_url(server)}/api/v1/tasks/runs/{run_id}/artifact", ssl=ctx,
                                headers={"X-Test-User": "tech"}) as resp:
                assert resp.status == 410
                error = (await resp.json())["error"]
        assert error["code"] == "artifact_expired"
        assert "deleted on" in error["message"] and "7-day retention" in error["message"]
        assert await audit.recent(server.db, action="task.artifact.download") == []
        cli = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "helpline", "admin", "task", "show", str(run["task_id"]), "--data", str(data),
            "--artifact-out", str(tmp_path / "out.tar.gz")], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 1 and "7-day retention" in cli.stderr
        assert not (tmp_path / "out.tar.gz").exists()
