"""A technician's live sessions follow their account: taking away the right a session needs, or disabling the user,
ends it within a second — streaming or still waiting for consent, changed over the API or from the CLI in another
process — through the sessions' one finish path (stored end, agent told, stream closed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from agent.consent.scripted import ScriptedConsentUI
from agent.viewer import Viewer
from server.accounts import admin
from server.app import HelplineServer
from server.auth.rights import Right
from server.sessions import SESSIONS
from tests.harness import RunningAgent, console_url, enroll_agent, running_agent, running_server, wait_until
from tests.test_accounts_support import make_user, ssl_context
from tests.test_session_helpers import configure_agent
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
#: The promise: the session is over within this long after the change is committed.
DEADLINE_S = 1.0


@dataclass
class Setup:
    server: HelplineServer
    agent: RunningAgent
    device_id: str
    token: str

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.request(
                method, console_url(self.server) + path, json=body, ssl=ssl_context(self.server),
                headers={"Authorization": f"Bearer {self.token}"}) as resp:
            return resp.status, await resp.json(content_type=None)

    async def request(self, mode: str) -> str:
        status, body = await self.api("POST", f"/api/v1/devices/{self.device_id}/sessions", {"mode": mode})
        assert status == 201, body
        return str(body["session_id"])

    def viewer(self, sid: str) -> Viewer:
        return Viewer(f"wss://localhost:{self.server.console_port}/api/v1/sessions/{sid}/stream",
                      ssl_context=ssl_context(self.server),
                      headers={"Origin": console_url(self.server), "Authorization": f"Bearer {self.token}"})

    def live(self, sid: str) -> bool:
        return sid in self.server.console_app[SESSIONS].live

    async def ended_within_deadline(self, sid: str, since: float) -> dict[str, Any]:
        await wait_until(lambda: not self.live(sid), timeout=DEADLINE_S + 4, interval=0.01, what="session ended")
        took = time.monotonic() - since
        assert took < DEADLINE_S, f"the session outlived the change by {took:.2f} s"
        row = await self.server.db.fetchone("SELECT state, end_reason, ended_by FROM sessions WHERE id = ?", (sid,))
        assert row is not None
        return row


@contextlib.asynccontextmanager
async def technician_with_device(tmp_path: Path, display: str, ui: ScriptedConsentUI) -> AsyncIterator[Setup]:
    """A real account (technician on group 'lab', API token) and an enrolled, connected agent in 'lab'."""
    async with running_server(tmp_path / "srv") as server:
        await make_user(server, "tess", "technician", groups={"lab": None})
        token = (await admin.create_token(server.db, "tess", "sessions", None, actor="test")).token
        state = await enroll_agent(server, tmp_path / "a", group="lab")
        async with running_agent(state, setup=configure_agent(display, ui)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            yield Setup(server, agent, state.device_id, token)


async def helpline_cli(server: HelplineServer, *args: str) -> None:
    """``helpline admin …`` in its own process against the running server's database."""
    env = {**os.environ, "HELPLINE_DATABASE_URL": server.config.db_url}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "helpline", "admin", *args, "--data",
                                                str(server.config.data_dir), cwd=ROOT, env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()


async def test_narrowed_rights_end_a_streaming_control_session(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """A change that keeps what the session needs leaves it running; taking remote_control away (PUT rights over
    the API) ends the control session and closes its stream within a second, by the server, audited."""
    async with technician_with_device(tmp_path, xvfb.display, ScriptedConsentUI([True])) as setup:
        server = setup.server
        sid = await setup.request("control")
        seen = asyncio.Event()

        async def after_sessions_saw_it(_user: str, _payload: dict[str, Any]) -> None:
            seen.set()  # registered after the sessions' handler: it runs once theirs has

        assert server.watcher is not None
        server.watcher.on(admin.RIGHTS_CHANGED, after_sessions_saw_it)
        async with setup.viewer(sid) as viewer:
            await viewer.wait_for_updates(1, 15)
            await admin.assign_rights(server.db, "tess", "lab", Right.VIEW_INVENTORY | Right.REMOTE_VIEW
                                      | Right.REMOTE_CONTROL, actor="test")
            await asyncio.wait_for(seen.wait(), 5)
            assert setup.live(sid) and not viewer.closed.is_set()
            await make_user(server, "root", "admin")
            root_token = (await admin.create_token(server.db, "root", "admin", None, actor="test")).token
            async with aiohttp.ClientSession() as http:
                started = time.monotonic()
                async with http.put(f"{console_url(server)}/api/v1/users/tess/rights/lab",
                                    json={"rights": ["view_inventory", "remote_view"]}, ssl=ssl_context(server),
                                    headers={"Authorization": f"Bearer {root_token}"}) as resp:
                    assert resp.status == 200, await resp.text()
            row = await setup.ended_within_deadline(sid, started)
            await asyncio.wait_for(viewer.closed.wait(), 2)
        assert (row["state"], row["ended_by"]) == ("ended", "server")
        assert "rights" in row["end_reason"]
        await wait_until(lambda: sid not in setup.agent.sessions.running, timeout=5, what="agent side ended")


async def test_rights_removed_from_the_cli_end_a_streaming_session(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """`helpline admin user ungrant` in another process ends the technician's running view session within a second
    of the command's commit (the event table reaches the live server)."""
    async with technician_with_device(tmp_path, xvfb.display, ScriptedConsentUI([True])) as setup:
        sid = await setup.request("view")
        async with setup.viewer(sid) as viewer:
            await viewer.wait_for_updates(1, 15)
            await helpline_cli(setup.server, "user", "ungrant", "tess", "--group", "lab")
            row = await setup.ended_within_deadline(sid, time.monotonic())
            await asyncio.wait_for(viewer.closed.wait(), 2)
        assert (row["state"], row["ended_by"]) == ("ended", "server") and "rights" in row["end_reason"]


async def test_disabling_the_user_ends_a_session_still_waiting_for_consent(tmp_path: Path,
                                                                           xvfb: XvfbHandle) -> None:  # noqa: F811
    """Disabling the technician from the CLI ends their session even before it streams (the consent prompt is
    still up), within a second; the agent withdraws the prompt."""
    async with technician_with_device(tmp_path, xvfb.display, ScriptedConsentUI([])) as setup:
        sid = await setup.request("view")
        await wait_until(lambda: bool(setup.agent.sessions.pending), timeout=10, what="consent prompt up")
        await helpline_cli(setup.server, "user", "disable", "tess")
        row = await setup.ended_within_deadline(sid, time.monotonic())
        assert (row["state"], row["ended_by"]) == ("ended", "server") and "disabled" in row["end_reason"]
        await wait_until(lambda: not setup.agent.sessions.pending, timeout=5, what="agent withdrew the prompt")
