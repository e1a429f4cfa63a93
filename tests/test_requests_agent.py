"""A session started from a support request, with the real device side: ``helpline help --send`` (a process)
through a real agent's help desk opens the request; the technician starts a session from it and the agent's own
consent decision asks the user "About your request #1: …" (a scripted prompt here; the Tk prompt prints the offer's
reason, agent/consent/tk_app.py); the request is claimed, the agent's book hears it, the session is recorded."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from agent.config import AgentConfig
from agent.consent.scripted import ScriptedConsentUI
from agent.help.local_socket import SOCKET_NAME
from server.accounts import admin
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.procs import HELPLINE
from tests.test_accounts_support import client, make_user
from tests.test_session_helpers import configure_agent
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


async def test_the_consent_prompt_names_the_request(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    state_dir = Path(tempfile.mkdtemp(prefix="hl-r-", dir="/tmp"))  # a Unix socket path has at most 107 bytes
    ui = ScriptedConsentUI([False])
    try:
        async with running_server(tmp_path / "srv") as server:
            await make_user(server, "tess", "technician", groups={"lab": None})
            tess = await admin.create_token(server.db, "tess", "t", None, actor="test")
            state = await enroll_agent(server, state_dir / "agent", group="lab")
            async with running_agent(state, AgentConfig(state_dir=state.directory, backoff_cap_s=1.0),
                                     setup=configure_agent(xvfb.display, ui)) as agent, \
                    client(server, Authorization=f"Bearer {tess.token}") as http:
                await wait_until(lambda: agent.client.ready.is_set(), timeout=30, what="agent connected")
                sock = state.directory / SOCKET_NAME
                await wait_until(sock.exists, timeout=10, what="help socket")
                done = await asyncio.to_thread(
                    subprocess.run, [*HELPLINE, "help", "--send", "Printer offline", "--no-screenshot", "--socket",
                                     str(sock)], capture_output=True, text=True, timeout=120,
                    env={**os.environ, "DISPLAY": xvfb.display})
                assert done.returncode == 0, done.stderr

                async def stored() -> bool:
                    return await server.db.fetchone("SELECT id FROM support_requests") is not None

                await wait_until(stored, timeout=15, what="the request on the server")
                row = await server.db.fetchone("SELECT id, number FROM support_requests")
                assert row is not None
                async with http.post(f"/api/v1/devices/{state.device_id}/sessions",
                                     json={"mode": "view", "request_id": row["id"]}) as resp:
                    assert resp.status == 201, await resp.text()
                    session = await resp.json()
                await wait_until(lambda: bool(ui.requests), timeout=20, what="the consent prompt")
                assert ui.requests[0].reason == f"About your request #{row['number']}: Printer offline"
                assert ui.requests[0].technician == "tess"
                assert agent.parts.help is not None
                book = agent.parts.help.book
                await wait_until(lambda: any(e.state == "claimed" and e.claimed_by == "tess"
                                             for e in book.entries.values()), timeout=15,
                                 what="claimed by tess in the agent's book")
                kinds = [r["kind"] for r in await server.db.fetchall(
                    "SELECT kind FROM support_request_events WHERE request_id = ? ORDER BY id", (row["id"],))]
                assert kinds == ["created", "claimed", "session"]
                linked = await server.db.fetchone("SELECT request_id FROM sessions WHERE id = ?",
                                                  (session["session_id"],))
                assert linked == {"request_id": row["id"]}
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
