"""Task artifacts in the shared object store: a diagnostics bundle received by node B downloads from node A
(API and `helpline admin task show --artifact-out`), both nodes on one database and a real nats-server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from certs import tls
from server.tasks.feature import ARTIFACTS
from tests import pg_store
from tests.harness import console_url, running_server
from tests.nats_objects import nats_server
from tests.test_session_helpers import install_test_auth
from tests.test_tasks_retention import PAYLOAD, _stored_run

ROOT = Path(__file__).resolve().parent.parent


async def test_bundle_received_on_b_downloads_from_a(tmp_path: Path) -> None:
    """B stores the sealed bundle and puts it into NATS; with B's directory gone, A's API and A's CLI fetch it
    and hand out the same plaintext."""
    (tmp_path / "nats").mkdir()
    shared_db = (pg_store.url_for(tmp_path / "b") if pg_store.enabled()
                 else f"sqlite:///{tmp_path / 'shared.db'}")
    with nats_server(tmp_path / "nats") as nats_url:
        common = {"nats_url": nats_url, "object_store": "nats", "database_url": shared_db,
                  "storage_key_file": tmp_path / "storage.key"}
        async with running_server(tmp_path / "b", **common) as node_b:
            run_id, _ = await _stored_run(node_b.db, node_b.console_app[ARTIFACTS])
            assert await node_b.console_app[ARTIFACTS].objects.exists(f"artifacts/{run_id}.tar.gz")  # type: ignore[union-attr]
            row = await node_b.db.fetchone("SELECT task_id FROM task_runs WHERE id = ?", (run_id,))
            assert row is not None
        (tmp_path / "b" / "artifacts").rename(tmp_path / "b-artifacts-elsewhere")
        async with running_server(tmp_path / "a", **common) as node_a:
            install_test_auth(node_a)
            ctx = tls.agent_client_context(node_a.pki.ca_pem, None, None)
            async with aiohttp.ClientSession() as http, http.get(
                    f"{console_url(node_a)}/api/v1/tasks/runs/{run_id}/artifact", ssl=ctx,
                    headers={"X-Test-User": "ann"}) as resp:
                assert resp.status == 200, await resp.text()
                assert await resp.read() == PAYLOAD
            (tmp_path / "a" / "artifacts" / f"{run_id}.tar.gz").unlink()  # the CLI fetches it again
            env = {**os.environ, "HELPLINE_DATABASE_URL": shared_db, "HELPLINE_NATS_URL": nats_url,
                   "HELPLINE_OBJECT_STORE": "nats", "HELPLINE_STORAGE_KEY_FILE": str(tmp_path / "storage.key")}
            out = tmp_path / "out.tar.gz"
            cli = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "helpline", "admin", "task", "show", str(row["task_id"]), "--data",
                str(tmp_path / "a"), "--artifact-out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                timeout=120)
            assert cli.returncode == 0, cli.stderr
            assert out.read_bytes() == PAYLOAD
