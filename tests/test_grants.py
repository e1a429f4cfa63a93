"""Unattended access: approver-signed grants end sessions on revocation, window close and expiry; server-signed
grants (still used by tasks: the grant book, four-eyes approval, the CLI) open no session."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import AgentConfig
from agent.consent.decision import SERVER_GRANT_REFUSED
from agent.consent.scripted import ScriptedConsentUI
from agent.grants import GrantBook
from agent.policy import LocalPolicy
from agent.runtime import Agent
from agent.state import AgentState
from certs.errors import GrantSignatureError
from certs.grants import load_grant_private_key, sign_grant
from protocol.grants import Grant, Window
from protocol.session import GrantPush, SessionOffer
from server.sessions import SESSIONS
from tests.authority_helpers import Org, make_org, publish, publish_revocations, submit, unattended_session
from tests.conftest import add_device
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import api, configure_agent, install_test_auth, viewer_for, wait_for_audit
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


def _grant(grant_id: str, now: float, **changes: object) -> Grant:
    """A grant valid from a minute before ``now`` for an hour (``now`` taken by each test, not at import)."""
    fields: dict[str, object] = dict(grant_id=grant_id, groups=["lab"], technicians=["ann"], actions=["view"],
                                     not_before=now - 60, not_after=now + 3600, issuer="root", issued_at=now)
    fields.update(changes)
    return Grant(**fields)  # type: ignore[arg-type]


def _offer(grant_id: str | None) -> SessionOffer:
    return SessionOffer(session_id="s-test", technician="ann", technician_user="ann", technician_role="technician",
                        mode="view", tunnel_token="t" * 43, grant_id=grant_id)


def test_grant_book_verifies_and_persists(tmp_path: Path) -> None:
    """A forged grant is refused; a good one is stored, re-verified on load, and dropped when tampered with."""
    now = time.time()
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    book = GrantBook(tmp_path, "dev-1", key.public_key())
    forged = sign_grant(other, _grant("forged-0001", now))
    with pytest.raises(GrantSignatureError, match="signature"):
        book.add(forged)
    assert book.grants() == []
    book.add(sign_grant(key, _grant("good-00001", now)))
    local = datetime.now()
    assert book.check("view", "ann", "technician", "lab", now, local).allowed
    assert not book.check("control", "ann", "technician", "lab", now, local).allowed
    assert GrantBook(tmp_path, "dev-1", key.public_key()).check("view", "ann", "x", "lab", now, local).allowed
    data = json.loads((tmp_path / "grants.json").read_text())
    data["grants"][0]["document"] = data["grants"][0]["document"].replace('"ann"', '"eve"')
    (tmp_path / "grants.json").write_text(json.dumps(data))
    assert GrantBook(tmp_path, "dev-1", key.public_key()).grants() == []


async def test_server_signed_grants_open_no_session(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """A grant signed with the server's grant key — one the agent verified and keeps for tasks — starts no
    session, with or without a prompt policy, and nobody is asked: whoever holds the server's data dir holds
    that key."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "a", group="lab")
        key = load_grant_private_key(server.pki.grant_key)
        ui = ScriptedConsentUI([])
        async with running_agent(state, setup=configure_agent(xvfb.display, ui)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sessions = agent.sessions
            await sessions.on_grant_push(agent.client, GrantPush(grants=[sign_grant(key, _grant("good-000001",
                                                                                              time.time()))]))
            assert sessions.book.get("good-000001") is not None  # still verified and kept for tasks
            for policy in (LocalPolicy(), LocalPolicy(require_prompt=True), LocalPolicy(allow_unattended=False)):
                decision = await sessions.decide(_offer("good-000001"), policy)
                assert not decision.accepted and decision.by == "grant", decision
                assert decision.reason == SERVER_GRANT_REFUSED
            assert ui.requests == []


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


async def test_four_eyes_approval(tmp_path: Path) -> None:
    """With four-eyes on, a grant stays pending and unsigned until another admin approves it."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        server.config.grant_four_eyes = True  # type: ignore[attr-defined]
        status, grant = await api(server, "POST", "/api/v1/grants", "root", {
            "groups": ["lab"], "roles": ["technician"], "actions": ["view", "control"], "duration_s": 600,
            "windows": [{"days": [0, 1, 2, 3, 4], "start": "22:00", "end": "06:00"}]})
        assert status == 201 and grant["status"] == "pending"
        gid = grant["grant_id"]
        assert (await api(server, "POST", f"/api/v1/grants/{gid}/approve", "root"))[0] == 403
        assert (await api(server, "POST", f"/api/v1/grants/{gid}/approve", "ann"))[0] == 403  # no approve right
        status, approved = await api(server, "POST", f"/api/v1/grants/{gid}/approve", "eve")
        assert status == 200 and approved["status"] == "active" and approved["approver"] == "eve"
        status, listing = await api(server, "GET", "/api/v1/grants?status=active", "ann")
        assert status == 200 and [g["grant_id"] for g in listing["grants"]] == [gid]
        assert (await api(server, "GET", "/api/v1/grants", "vic"))[0] == 403
        await wait_for_audit(server, "grant.approve")


async def test_grant_of_another_group_answers_like_a_missing_one(tmp_path: Path) -> None:
    """A manager of group 'other' gets the same 404 for a 'lab' grant (read, revoke) or a 'lab' device (create)
    as for ones that do not exist, and the listing leaves the grant out; the grant stays active."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        await add_device(server.db, "dev-lab", "lab")
        status, grant = await api(server, "POST", "/api/v1/grants", "root", {
            "groups": ["lab"], "technicians": ["ann"], "actions": ["view"], "duration_s": 600})
        assert status == 201, grant
        gid = grant["grant_id"]
        for method, suffix in (("GET", ""), ("POST", "/revoke")):
            foreign = await api(server, method, f"/api/v1/grants/{gid}{suffix}", "bob")
            missing = await api(server, method, f"/api/v1/grants/g-0000000000000000{suffix}", "bob")
            assert foreign == missing == (404, {"error": {"code": "not_found", "message": "no such grant"}}), suffix
        status, listing = await api(server, "GET", "/api/v1/grants", "bob")
        assert status == 200 and listing == {"grants": []}
        body = {"technicians": ["ann"], "actions": ["view"], "duration_s": 600}
        foreign = await api(server, "POST", "/api/v1/grants", "bob", {**body, "devices": ["dev-lab"]})
        missing = await api(server, "POST", "/api/v1/grants", "bob", {**body, "devices": ["dev-lab"[:3]]})
        assert foreign[0] == missing[0] == 404 and foreign[1]["error"]["code"] == "not_found"
        assert (await api(server, "POST", "/api/v1/grants", "bob", {**body, "groups": ["lab"]}))[0] == 403
        status, seen = await api(server, "GET", f"/api/v1/grants/{gid}", "ann")
        assert status == 200 and seen["status"] == "active"


async def test_cli_grant_changes_reach_the_agent(tmp_path: Path) -> None:
    """``helpline admin grant create/revoke`` in another process reach a connected agent through the live server."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "a", group="lab")
        async with running_agent(state, setup=configure_agent(None, ScriptedConsentUI([]))) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sessions = agent.sessions

            async def cli(*args: str) -> str:
                env = {**os.environ, "HELPLINE_DATABASE_URL": server.config.db_url}
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "helpline", "admin", "grant", *args, "--data", str(server.config.data_dir),
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
                out, _ = await proc.communicate()
                assert proc.returncode == 0, out.decode()
                return out.decode()

            out = await cli("create", "--group", "lab", "--technician", "ann", "--action", "view,control",
                            "--window", "mon-sun 00:00-00:00", "--valid", "2h")
            gid = out.split()[0]
            await wait_until(lambda: sessions.book.get(gid) is not None, timeout=10, what="CLI grant pushed")
            assert "active" in await cli("list")
            await cli("revoke", gid)
            await wait_until(lambda: gid in sessions.book.revoked, timeout=10, what="CLI revocation pushed")


def test_grant_window_end_is_the_session_deadline() -> None:
    """A session under a windowed grant must end when the window closes (or at not_after, if sooner)."""
    now = time.time()
    local = datetime(2024, 1, 1, 23, 0)  # a Monday, 23:00
    grant = _grant("window-0002", now, windows=[Window(days=[0], start="22:00", end="06:00")],
                   not_after=now + 86400 * 3)
    end = GrantBook.ends_at(grant, now, local)
    assert abs(end - (now + timedelta(hours=7).total_seconds())) < 1
    assert GrantBook.ends_at(_grant("short-0001", now, not_after=now + 60), now, local) == now + 60


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
