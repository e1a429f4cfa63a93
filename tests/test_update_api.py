"""The server's self-update surface: uploads checked against the manifest, rights, rollouts, the audit, and
the artifact download on the agent listener (mTLS, only for devices a rollout offered it to)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import aiohttp

from certs import tls
from protocol.authority import Artifact, ReleaseManifest
from protocol.update import artifact_path
from server import audit
from server.app import HelplineServer
from server.updates import repository, service
from tests.authority_helpers import make_org, submit
from tests.harness import console_url, enroll_agent, running_server
from tests.tasks_helpers import publish_authority
from tests.test_session_helpers import api, install_test_auth

BYTES = b"helpline agent 0.2.0 " * 100
NAME = "helpline-agent-0.2.0.tar.gz"


async def put(server: HelplineServer, path: str, user: str, data: bytes) -> tuple[int, Any]:
    ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
    async with aiohttp.ClientSession() as http, http.put(console_url(server) + path, data=data, ssl=ctx,
                                                         headers={"X-Test-User": user}) as response:
        return response.status, await response.json(content_type=None)


async def test_uploads_rollouts_and_downloads_follow_the_manifest_and_the_rights(tmp_path: Path) -> None:
    """Wrong bytes 409 and nothing kept; a technician 403; the right bytes once stored; a rollout validated,
    listed, cancelled once; downloads only by a device the rollout offered the artifact to; all audited."""
    org = make_org()
    async with running_server(tmp_path / "data") as server:
        install_test_auth(server)
        await publish_authority(server.db, org)
        state = await enroll_agent(server, tmp_path / "agent", "lab")
        other = await enroll_agent(server, tmp_path / "other", "lab")
        now = time.time()
        sha = hashlib.sha256(BYTES).hexdigest()
        body = ReleaseManifest(version="0.2.0", released_at=now, not_after=now + 3600,
                               artifacts=[Artifact(name=NAME, sha256=sha, size=len(BYTES))])
        await submit(server, org.sign("release", body))
        path = f"/api/v1/updates/releases/0.2.0/artifacts/{NAME}"
        status, answer = await put(server, path, "root", BYTES[:-1] + b"!")
        assert status == 409 and answer["error"]["code"] == "artifact_mismatch", answer
        status, answer = await put(server, path, "root", BYTES + b"more")
        assert status == 409 and "more than the" in answer["error"]["message"], answer
        assert not list(service.artifact_dir(server.config.data_dir).iterdir()), "no partial file left"
        status, answer = await put(server, path, "ann", BYTES)
        assert status == 403, answer
        status, answer = await put(server, "/api/v1/updates/releases/0.2.0/artifacts/other.whl", "root", BYTES)
        assert status == 404 and "lists no artifact" in answer["error"]["message"]
        status, answer = await put(server, path, "root", BYTES)
        assert status == 201 and answer["sha256"] == sha, answer
        status, answer = await put(server, path, "root", BYTES)
        assert status == 200 and answer["added"] is False
        status, listing = await api(server, "GET", "/api/v1/updates/releases", "root")
        assert status == 200 and listing["releases"][0]["artifacts"][0]["uploaded"] is True

        for request, code in (({"version": "9.9.9"}, 404), ({"version": "0.2.0", "waves": [50, 10]}, 400),
                              ({"version": "0.2.0", "devices": ["nope"]}, 404),
                              ({"version": "0.2.0", "groups": ["empty"]}, 409),
                              ({"version": "0.2.0", "failure_threshold": 2}, 400)):
            status, answer = await api(server, "POST", "/api/v1/updates/rollouts", "root", request)
            assert status == code, (request, answer)
        status, answer = await api(server, "POST", "/api/v1/updates/rollouts", "ann", {"version": "0.2.0"})
        assert status == 403
        status, created = await api(server, "POST", "/api/v1/updates/rollouts", "root",
                                    {"version": "0.2.0", "devices": [state.device_id], "waves": [100]})
        assert status == 201 and created["devices"] == 1 and created["status"] == "running", created
        status, shown = await api(server, "GET", f"/api/v1/updates/rollouts/{created['rollout_id']}", "root")
        assert shown["targets"][0]["device_id"] == state.device_id and shown["states"] == {"pending": 1}

        url = f"https://localhost:{server.agent_port}{artifact_path(sha)}"

        async def download(device_state: Any) -> tuple[int, bytes]:
            ctx = tls.agent_client_context(device_state.ca_path, device_state.cert_path, device_state.key_path)
            async with aiohttp.ClientSession() as http, http.get(url, ssl=ctx) as response:
                return response.status, await response.read()

        assert (await download(state))[0] == 404, "not offered yet"
        await repository.mark_offered(server.db, created["rollout_id"], state.device_id)
        assert await download(state) == (200, BYTES)
        assert (await download(other))[0] == 404, "another device was never offered it"
        ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
        try:  # no client certificate: the TLS layer refuses (or, at the latest, the handler)
            async with aiohttp.ClientSession() as http, http.get(url, ssl=ctx) as response:
                anonymous: int | None = response.status
        except aiohttp.ClientError:
            anonymous = None
        assert anonymous in (None, 401), anonymous

        status, answer = await api(server, "POST", f"/api/v1/updates/rollouts/{created['rollout_id']}/cancel", "root")
        assert status == 200 and answer["status"] == "cancelled"
        status, answer = await api(server, "POST", f"/api/v1/updates/rollouts/{created['rollout_id']}/cancel", "root")
        assert status == 409
        assert (await download(state))[0] == 404, "a cancelled rollout's artifact is served no more"
        actions = [r["action"] for r in await audit.recent(server.db, limit=200)]
        for action in ("update.artifact_upload", "update.rollout_create", "update.rollout_cancelled"):
            assert action in actions, actions


async def test_an_agent_not_run_by_the_launcher_refuses_even_a_signed_update(tmp_path: Path) -> None:
    """An agent started without the launcher could neither restart into a release nor be rolled back: it checks
    the manifest (allowed), then refuses, says why and audits it; the threshold-0 rollout halts."""
    from tests.harness import running_agent, wait_until
    from tests.tasks_helpers import pinned
    from tests.update_helpers import device_audit, enroll_pinned, roll_out, wait_state

    org = make_org()
    async with running_server(tmp_path / "data") as server:
        install_test_auth(server)
        await publish_authority(server.db, org)
        state = await enroll_pinned(server, tmp_path / "agent", org, "lab")
        now = time.time()
        body = ReleaseManifest(version="0.2.0", released_at=now, not_after=now + 3600,
                               artifacts=[Artifact(name=NAME, sha256=hashlib.sha256(BYTES).hexdigest(),
                                                   size=len(BYTES))])
        await submit(server, org.sign("release", body))
        assert (await put(server, f"/api/v1/updates/releases/0.2.0/artifacts/{NAME}", "root", BYTES))[0] == 201
        async with running_agent(state, pinned(state, org)) as agent:
            await wait_until(lambda: agent.client.ready.is_set(), timeout=30, what="the agent connected")
            rollout_id = await roll_out(server, "0.2.0", devices=[state.device_id])
            refused = await wait_state(server, rollout_id, state.device_id, "refused", timeout=60)
        assert "not started by the update launcher" in refused["reason"], refused
        assert [e["event"] for e in device_audit(state)][-2:] == ["release.allowed", "update.refused"]

        async def halted() -> bool:
            row = await repository.rollout(server.db, rollout_id)
            return row is not None and row["status"] == "halted"

        await wait_until(halted, timeout=30, what="the rollout halted")
