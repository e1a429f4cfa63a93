"""Unattended access under approver-signed grants: sessions end on revocation, window close and expiry.

(The server-signed grants of old — the server's own grant key, its grant API and CLI — are gone: see
tests/test_authority_tasks.py for what an attacker holding the server's data directory can do now.)"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.authority.scope import grant_deadline
from agent.config import AgentConfig
from agent.consent.scripted import ScriptedConsentUI
from agent.runtime import Agent
from agent.state import AgentState
from protocol.authority import UnattendedGrant
from protocol.grants import Window
from server.sessions import SESSIONS
from tests.authority_helpers import Org, make_org, publish, publish_revocations, submit, unattended_session
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import api, configure_agent, install_test_auth, viewer_for
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


def _pinned(state: AgentState, org: Org) -> AgentConfig:
    """The agent's configuration as the administrator deploys it: the org root's fingerprint pinned."""
    return AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, trust_root_sha256=org.root.fingerprint)


async def test_unattended_session_ends_when_its_grant_is_revoked(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Two approvers' grant and the technician's proof start a session without a prompt; a revocation list
    naming the grant ends it ("grant revoked"), and the grant is refused from then on."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "a", group="lab")
        await publish(server, org)
        ui = ScriptedConsentUI([])
        async with running_agent(state, _pinned(state, org), setup=configure_agent(xvfb.display, ui)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            await submit(server, org.grant("grant-night-1", reason="night maintenance"))
            session = await unattended_session(server, org, state.device_id, "grant-night-1")
            assert session["answered_by"] == "grant" and session["state"] in ("consented", "streaming"), session
            sid = session["session_id"]
            async with viewer_for(server, sid) as viewer:
                await viewer.wait_for_updates(1, 15)
                assert ui.requests == []
                await publish_revocations(server, org.revocations(documents=("grant-night-1",)))
                await asyncio.wait_for(viewer.closed.wait(), 10)
            await wait_until(lambda: sid not in server.console_app[SESSIONS].live, what="session ended")
            _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
            assert body["end_reason"] == "grant revoked" and body["answered_by"] == "grant", body
            again = await unattended_session(server, org, state.device_id, "grant-night-1")
            assert again["state"] == "ended" and "grant grant-night-1 has been revoked" in again["end_reason"], again
            assert agent.sessions.finished[sid] == "grant revoked"


def test_grant_window_end_is_the_session_deadline() -> None:
    """A session under a windowed grant must end when the window closes (or at not_after, if sooner)."""
    now = time.time()
    local = datetime(2024, 1, 1, 23, 0)  # a Monday, 23:00

    def grant(grant_id: str, **changes: Any) -> UnattendedGrant:
        fields: dict[str, Any] = dict(grant_id=grant_id, groups=["lab"], technician_names=["Dave"], actions=["view"],
                                      not_before=now - 60, not_after=now + 3600, issuer="Alice", issued_at=now)
        return UnattendedGrant(**(fields | changes))

    windowed = grant("window-0002", windows=[Window(days=[0], start="22:00", end="06:00")], not_after=now + 86400 * 3)
    assert abs(grant_deadline(windowed, now, local) - (now + timedelta(hours=7).total_seconds())) < 1
    assert grant_deadline(grant("short-0001", not_after=now + 60), now, local) == now + 60


class FakeClock:
    """The agent's wall clock and local time: real time plus a jump the test makes instead of waiting."""

    def __init__(self, local: datetime) -> None:
        self.start_wall, self.start_local, self.offset = time.time(), local, 0.0

    def wall(self) -> float:
        return time.time() + self.offset

    def local(self) -> datetime:
        return self.start_local + timedelta(seconds=time.time() - self.start_wall + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


async def test_agent_ends_session_at_window_close_and_at_expiry(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Under a signed grant for Mondays 21:00-22:00 the agent itself ends the session when its clock passes 22:00
    ("grant window ended"), and under a 1 h grant when its clock passes not_after ("grant expired"); not before."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "a", group="lab")
        await publish(server, org)
        clock = FakeClock(datetime(2024, 1, 1, 21, 58, 30))  # a Monday

        def setup(agent: Agent) -> None:
            configure_agent(xvfb.display, ScriptedConsentUI([]))(agent)
            agent.sessions.clock, agent.sessions.deadline_check_s = clock, 0.05

        async with running_agent(state, _pinned(state, org), setup=setup) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sessions = agent.sessions
            cases: tuple[tuple[str, dict[str, Any], float, str], ...] = (
                ("grant-window-1", {"windows": [Window(days=[0], start="21:00", end="22:00")]}, 90.0,
                 "grant window ended"),
                ("grant-expiry-1", {}, 3600.0, "grant expired"))
            for grant_id, extra, advance, reason in cases:
                clock.offset = 0.0
                await submit(server, org.grant(grant_id, **extra))
                session = await unattended_session(server, org, state.device_id, grant_id)
                assert session["answered_by"] == "grant", session
                sid = session["session_id"]
                async with viewer_for(server, sid) as viewer:
                    await viewer.wait_for_updates(1, 15)
                    clock.advance(advance - 30)  # still inside: nothing happens
                    await asyncio.sleep(0.3)  # several deadline checks (0.05 s) must pass without ending it
                    assert not viewer.closed.is_set() and sid in sessions.running
                    clock.advance(31)
                    moved = time.monotonic()
                    await asyncio.wait_for(viewer.closed.wait(), 5)
                    assert time.monotonic() - moved < 1.0

                def ended(sid: str = sid) -> bool:
                    return sid not in server.console_app[SESSIONS].live and sid in sessions.finished

                await wait_until(ended, what="ended on the server and the agent")
                assert sessions.finished[sid] == reason
                _status, body = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
                assert body["end_reason"] == reason and body["ended_by"] == "agent", body
