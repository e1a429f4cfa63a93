"""The session driver and its one finish path without a network: the store is real (SQLite, or PostgreSQL
with HELPLINE_TEST_PG_URL); a stub stands in for the agent's control channel and records what the server
sends it; the clock is moved forward instead of waiting out the answer and tunnel deadlines."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from protocol.messages import Message
from protocol.session import (
    CONSENT_TIMEOUT_S,
    TUNNEL_TOKEN_LIFE_S,
    EndReason,
    SessionAnswer,
    SessionEnd,
    SessionOffer,
)
from server import audit
from server.auth.rights import ANY_GROUP, ROLE_RIGHTS, Principal
from server.connections import ConnectionRegistry
from server.errors import ApiError
from server.sessions import SessionDriver, repository
from server.sessions.finish import Finisher
from server.sessions.live import LiveSession, LiveTable
from server.sessions.settings import SessionSettings
from server.store import Database
from tests.conftest import add_device
from tests.harness import wait_until

ANN = Principal("u1", "ann", "technician", {ANY_GROUP: ROLE_RIGHTS["technician"]})
SERIAL = 0xC0FFEE


@dataclass
class StubAgent:
    """Stands in for an AgentConnection: what the server sends to the device is kept in ``sent``."""

    device_id: str
    certificate: Any = field(default_factory=lambda: SimpleNamespace(serial_number=SERIAL))
    sent: list[Message] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: AgentConnection.hello (the device's capabilities); None: it said nothing that limits a session.
    hello: Any = None

    @property
    def certificate_serial(self) -> str:
        """What the tunnel token is bound to (AgentConnection.certificate_serial)."""
        return format(self.certificate.serial_number, "x")

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def reply_error(self, code: str, _message: str, _in_reply_to: str | None) -> None:
        self.errors.append(code)


class Clock:
    """Wall-clock time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Setup:
    driver: SessionDriver
    agent: StubAgent
    clock: Clock
    live: LiveTable


def _setup(db: Database, device_id: str) -> Setup:
    connections, clock = ConnectionRegistry(), Clock()
    live: LiveTable = {}
    agent = StubAgent(device_id)
    connections.add(agent)  # type: ignore[arg-type]  # the stub has what the driver uses
    finisher = Finisher(lambda: db, connections, live, clock)
    driver = SessionDriver(lambda: db, connections, SessionSettings(), live, finisher, clock)
    return Setup(driver, agent, clock, live)


async def _offered(s: Setup, device_id: str) -> tuple[LiveSession, str]:
    session = await s.driver.request(device_id=device_id, group="lab", technician=ANN, mode="view", reason="t")
    (offer,) = [m for m in s.agent.sent if isinstance(m, SessionOffer)]
    return session, offer.tunnel_token


async def _ended_audits(db: Database, device_id: str) -> list[dict[str, Any]]:
    return await audit.recent(db, action="session.ended", target=device_id)


async def test_a_tunnel_that_never_comes_ends_through_the_finish_path_once(db: Database) -> None:
    """Consented but no tunnel within the token life: the row ends, session.ended is audited once, the agent is
    told, the live session is gone; a later end (technician) changes nothing."""
    device = await add_device(db, "dev-drv")
    s = _setup(db, device)
    session, _token = await _offered(s, device)
    await s.driver.on_answer(s.agent, SessionAnswer(session_id=session.session_id, accepted=True, by="user",  # type: ignore[arg-type]
                                                     mode_granted="view"))
    s.clock.offset = TUNNEL_TOKEN_LIFE_S + 1
    session.notify()  # wake the deadline watcher to read the moved clock
    await wait_until(lambda: session.session_id not in s.live, timeout=5, what="session finished")
    row = await repository.get(db, session.session_id)
    assert row is not None and row["state"] == "ended" and row["ended_by"] == "server"
    assert row["end_reason"] == "the agent did not open the tunnel in time" and row["answered_by"] == "user"
    told = s.agent.sent[-1]
    assert isinstance(told, SessionEnd) and told.reason == row["end_reason"] and told.by == "server"
    assert not await s.driver.finisher.finish(session, EndReason.TECHNICIAN.value, "technician")
    assert len(await _ended_audits(db, device)) == 1 and s.agent.sent[-1] is told


async def test_an_unanswered_offer_times_out_and_withdraws_the_prompt(db: Database) -> None:
    """No answer before the consent deadline: timed out (audited by the server), ended, the agent told to drop
    the prompt, and the token no longer opens a tunnel."""
    device = await add_device(db, "dev-drv")
    s = _setup(db, device)
    session, token = await _offered(s, device)
    s.clock.offset = CONSENT_TIMEOUT_S + 6
    session.notify()
    await wait_until(lambda: session.session_id not in s.live, timeout=5, what="session finished")
    row = await repository.get(db, session.session_id)
    assert row is not None and row["state"] == "ended" and row["end_reason"] == EndReason.TIMED_OUT.value
    assert isinstance(s.agent.sent[-1], SessionEnd)
    assert [r["actor"] for r in await audit.recent(db, action="session.timed_out", target=device)] == ["server"]
    assert len(await _ended_audits(db, device)) == 1
    with pytest.raises(ApiError) as refused:
        await s.driver.claim_tunnel(session.session_id, token, device, f"{SERIAL:x}")
    assert (refused.value.status, refused.value.code) == (403, "unknown_session")


async def test_tunnel_token_rules(db: Database) -> None:
    """A wrong token, another certificate and an expired token are refused (403, audited); the right one opens
    the tunnel once."""
    device = await add_device(db, "dev-drv")
    s = _setup(db, device)
    session, token = await _offered(s, device)
    await s.driver.on_answer(s.agent, SessionAnswer(session_id=session.session_id, accepted=True, by="user",  # type: ignore[arg-type]
                                                     mode_granted="view"))
    sid, serial = session.session_id, f"{SERIAL:x}"
    for presented, cert, code in ((token[::-1], serial, "bad_token"), (token, "beef", "foreign_token")):
        with pytest.raises(ApiError) as refused:
            await s.driver.claim_tunnel(sid, presented, device, cert)
        assert (refused.value.status, refused.value.code) == (403, code)
    assert await s.driver.claim_tunnel(sid, token, device, serial) is session
    with pytest.raises(ApiError) as refused:
        await s.driver.claim_tunnel(sid, token, device, serial)
    assert refused.value.code == "token_used"
    session.token.used = False  # as if unused, but late:
    s.clock.offset = TUNNEL_TOKEN_LIFE_S + 1
    with pytest.raises(ApiError) as refused:
        await s.driver.claim_tunnel(sid, token, device, serial)
    assert refused.value.code == "token_expired"
    refusals = await audit.recent(db, action="session.tunnel_refused", target=sid)
    assert sorted(json.loads(r["details"])["code"] for r in refusals) == [
        "bad_token", "foreign_token", "token_expired", "token_used"]
    await s.driver.finisher.finish(session, EndReason.TECHNICIAN.value, "technician")


async def test_a_server_that_stops_leaves_no_session_watcher_running(tmp_path: Path) -> None:
    """A session offered and not answered when the server stops: its deadline watcher ends with the server (it
    lived on, waiting out the consent deadline to write to a closed store); the driver's close() alone does the
    same for a live session."""
    from server.accounts import admin
    from server.auth.rights import Right
    from server.sessions import SESSIONS
    from tests.harness import enroll_agent, running_server
    from tests.requests_helpers import device_channel
    from tests.test_accounts_support import client, make_user

    def watchers() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if not t.done() and "_watch_deadlines" in repr(t.get_coro())]

    async with running_server(tmp_path / "srv") as server:
        await make_user(server, "tess", "technician", groups={"lab": Right.REMOTE_VIEW | Right.VIEW_INVENTORY})
        tess = await admin.create_token(server.db, "tess", "t", None, actor="test")
        state = await enroll_agent(server, tmp_path / "dev", group="lab")
        async with device_channel(state, server.agent_port) as dev, \
                client(server, Authorization=f"Bearer {tess.token}") as http:
            async with http.post(f"/api/v1/devices/{state.device_id}/sessions",
                                 json={"mode": "view", "reason": "printer"}) as resp:
                assert resp.status == 201, await resp.text()
            await dev.wait_for(lambda m: m.get("type") == "session.offer", what="session.offer")
            assert len(watchers()) == 1 and len(server.console_app[SESSIONS].live) == 1
    await asyncio.sleep(0)
    assert watchers() == []


async def test_the_drivers_close_ends_its_watchers(db: Database) -> None:
    device = await add_device(db, "dev-drv")
    s = _setup(db, device)
    session, _token = await _offered(s, device)
    assert session.session_id in s.live
    await s.driver.close()
    assert not [t for t in asyncio.all_tasks() if not t.done() and "_watch_deadlines" in repr(t.get_coro())]
