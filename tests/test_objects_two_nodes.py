"""A recording made on node B plays from node A: two server nodes on one database (PostgreSQL under
HELPLINE_TEST_STORE=postgresql, else one SQLite file) and one real nats-server (JetStream object store).
The session runs on B with a real agent on Xvfb; when it ends B puts the sealed files into NATS; A, which
never had them on disk, fetches and streams the same plaintext (audited), and the NATS copy is sealed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from agent.consent.scripted import ScriptedConsentUI
from certs import tls
from server import audit
from server.sessions.recordings_api import OBJECTS
from tests import pg_store
from tests.harness import console_url, enroll_agent, running_agent, running_server, wait_until
from tests.nats_objects import nats_server
from tests.sealed_files import plain
from tests.test_session_helpers import api, configure_agent, install_test_auth, viewer_for
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


async def test_recording_made_on_node_b_streams_from_node_a(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Node A answers the recording of a session recorded on node B byte for byte (plaintext), fetched from NATS."""
    (tmp_path / "nats").mkdir()
    shared_db = (pg_store.url_for(tmp_path / "b") if pg_store.enabled()
                 else f"sqlite:///{tmp_path / 'shared.db'}")
    with nats_server(tmp_path / "nats") as nats_url:
        common = {"nats_url": nats_url, "object_store": "nats", "database_url": shared_db,
                  "storage_key_file": tmp_path / "storage.key"}  # every node holds the same storage key
        async with running_server(tmp_path / "b", session_recording=True, **common) as node_b:
            install_test_auth(node_b)
            state = await enroll_agent(node_b, tmp_path / "agent")
            async with running_agent(state, setup=configure_agent(xvfb.display, ScriptedConsentUI([True]))) as agent:
                await asyncio.wait_for(agent.client.ready.wait(), 20)
                status, body = await api(node_b, "POST", f"/api/v1/devices/{state.device_id}/sessions", "ann",
                                         {"mode": "view"})
                assert status == 201, body
                sid = body["session_id"]
                async with viewer_for(node_b, sid) as viewer:
                    await viewer.wait_for_updates(1, 30)
                status, _ = await api(node_b, "POST", f"/api/v1/sessions/{sid}/end", "ann")
                assert status == 200
            store = node_b.console_app[OBJECTS]
            await wait_until(lambda: store.exists(f"recordings/{sid}.json"), timeout=30,
                             what="node B put the recording into the object store")
            on_b = tmp_path / "b" / "recordings" / f"{sid}.hlrec"
            expected, sealed = plain(on_b), on_b.read_bytes()
            assert len(expected) > 0
            # Both "nodes" share this machine's disk: B's directory is moved away so that A cannot read B's
            # file through the stored path, as on a real second machine.
            (tmp_path / "b" / "recordings").rename(tmp_path / "b-recordings-elsewhere")

            async with running_server(tmp_path / "a", **common) as node_a:
                install_test_auth(node_a)
                on_a = tmp_path / "a" / "recordings" / f"{sid}.hlrec"
                assert not on_a.exists()
                ctx = tls.agent_client_context(node_a.pki.ca_pem, None, None)
                async with aiohttp.ClientSession() as http, http.get(
                        f"{console_url(node_a)}/api/v1/sessions/{sid}/recording/data", ssl=ctx,
                        headers={"X-Test-User": "ann"}) as resp:
                    assert resp.status == 200, await resp.text()
                    assert await resp.read() == expected
                assert on_a.read_bytes() == sealed  # the sealed file, as B stored it
                assert expected[:32] not in on_a.read_bytes()
                views = await audit.recent(node_a.db, action="session.recording.view")
                assert len(views) == 1 and views[0]["target"] == state.device_id
