"""`helpline admin task …` against a running server and agent: tasks under approver-signed authorizations."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp

from certs import tls
from server.api.context import AUTHENTICATORS
from server.auth.rights import Principal, Right
from server.tasks import repository
from server.tasks.feature import SCHEDULER
from tests.harness import console_url, enroll_agent, running_server, wait_until
from tests.tasks_helpers import authorize, make_org, store, task_agent

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "helpline", "admin", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


async def test_cli_runs_shows_and_api_lists_task(tmp_path: Path) -> None:
    """Run an approved script on a device from the CLI, read its output via `task show` and the REST API; a script
    other than the one approved is refused by the CLI, one approved by a single approver by the device."""
    data = tmp_path / "srv"
    org = make_org()
    async with running_server(data) as server:
        server.console_app[SCHEDULER].tick_s = 0.1
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        script = tmp_path / "hello.sh"
        script.write_text('echo "hello $1"\n')
        params = {"interpreter": "sh", "args": ["night"]}
        approved = await store(server.db, authorize(org, devices=[state.device_id], script=script.read_text(),
                                                    params=params, task_id="hello-night"))
        one_approver = await store(server.db, authorize(org, devices=[state.device_id], script=script.read_text(),
                                                        params=params, task_id="hello-once", signers=("alice",)))
        async with task_agent(server, state, org):
            ran = await asyncio.to_thread(_cli, "task", "run", "--data", str(data), "--device", state.device_id,
                                          "--document", approved, "--script", str(script), "--technician", "alice")
            assert ran.returncode == 0, ran.stderr
            task_id = ran.stdout.split()[1].rstrip(":")

            async def done() -> bool:
                runs = await repository.runs_of_task(server.db, task_id)
                return runs[0]["status"] == "succeeded"

            await wait_until(done, timeout=20, what="CLI task ran")
            shown = await asyncio.to_thread(_cli, "task", "show", task_id, "--output", "--data", str(data))
            assert "hello night" in shown.stdout and "succeeded" in shown.stdout and approved in shown.stdout
            listed = await asyncio.to_thread(_cli, "task", "list", "--data", str(data))
            assert task_id in listed.stdout
            tampered = tmp_path / "evil.sh"
            tampered.write_text("rm -rf /\n")
            evil = await asyncio.to_thread(_cli, "task", "run", "--data", str(data), "--device", state.device_id,
                                           "--document", approved, "--script", str(tampered))
            assert evil.returncode == 1 and "document_mismatch" in evil.stderr and "SHA-256" in evil.stderr
            once = await asyncio.to_thread(_cli, "task", "run", "--data", str(data), "--device", state.device_id,
                                           "--document", one_approver, "--script", str(script))
            assert once.returncode == 0, once.stderr
            once_id = once.stdout.split()[1].rstrip(":")

            async def refused() -> bool:
                runs = await repository.runs_of_task(server.db, once_id)
                return runs[0]["status"] == "refused"

            await wait_until(refused, timeout=20, what="single-approver script refused")
            assert "needs 2 distinct approvers" in (await repository.runs_of_task(server.db, once_id))[0]["reason"]
        evil_id = once_id

        async def as_header(request):
            name = request.headers.get("X-Test-User")
            if name == "tech":
                return Principal("u1", "tech", "technician", {"lab": Right.RUN_TASKS})
            if name == "other":
                return Principal("u2", "other", "technician", {"elsewhere": Right.RUN_TASKS})
            return None

        server.console_app[AUTHENTICATORS].append(as_header)
        ctx: ssl.SSLContext = tls.agent_client_context(server.pki.ca_pem, None, None)
        async with aiohttp.ClientSession() as http:
            base = console_url(server)
            async with http.get(f"{base}/api/v1/tasks", ssl=ctx, headers={"X-Test-User": "tech"}) as resp:
                assert resp.status == 200
                assert {t["id"] for t in (await resp.json())["tasks"]} == {task_id, evil_id}
            async with http.get(f"{base}/api/v1/devices/{state.device_id}/tasks", ssl=ctx,
                                headers={"X-Test-User": "tech"}) as resp:
                runs = (await resp.json())["runs"]
                assert {r["status"] for r in runs} == {"succeeded", "refused"}
                assert any(r["stdout"] == "hello night\n" for r in runs)
            # A device of a group the caller has no right on answers exactly like one that does not exist.
            async with http.get(f"{base}/api/v1/devices/{state.device_id}/tasks", ssl=ctx,
                                headers={"X-Test-User": "other"}) as resp:
                foreign = resp.status, await resp.json()
            async with http.get(f"{base}/api/v1/devices/no-such-device/tasks", ssl=ctx,
                                headers={"X-Test-User": "other"}) as resp:
                missing = resp.status, await resp.json()
            assert foreign == missing == (404, {"error": {"code": "not_found", "message": "no such device"}})
            async with http.get(f"{base}/api/v1/tasks", ssl=ctx, headers={"X-Test-User": "other"}) as resp:
                assert (await resp.json())["tasks"] == []
            async with http.get(f"{base}/api/v1/tasks", ssl=ctx) as resp:
                assert resp.status == 401
