"""The survey's server side with real agents: answers only from the request's own device, once;
an offline device is asked when it connects. Plus the CSV's quoting of hostile bucket names."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from agent import control_client
from agent.control_client import AgentClient
from protocol.messages import Error
from protocol.requests import RequestOpen, RequestStatus
from protocol.surveys import SurveyAnswer, SurveyAsk
from server.kpis.api import to_csv
from server.kpis.compute import Event, Request, report
from tests.harness import RunningAgent, enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import api, install_test_auth


class Seen:
    """What a real agent's control channel got: survey asks and refusals."""

    def __init__(self, agent: RunningAgent) -> None:
        self.asks: list[SurveyAsk] = []
        self.errors: list[Error] = []

        async def on_ask(_client: AgentClient, ask: SurveyAsk) -> None:
            self.asks.append(ask)

        async def on_error(_client: AgentClient, error: Error) -> None:
            self.errors.append(error)

        agent.client.register(SurveyAsk, on_ask)
        agent.client.register(Error, on_error)


async def test_answers_only_from_the_own_device_once_and_offline_devices_are_asked_later(tmp_path: Path) -> None:
    """Device B answering A's survey is refused (survey_unknown), A's second answer too (survey_answered),
    the first answer stays; a request resolved while its device is offline is asked on reconnect."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state_a = await enroll_agent(server, tmp_path / "a")
        state_b = await enroll_agent(server, tmp_path / "b")
        async with running_agent(state_a) as agent_a:
            seen_a = Seen(agent_a)
            await asyncio.wait_for(agent_a.client.ready.wait(), 30)
            for summary in ("first", "second"):
                await agent_a.client.send(RequestOpen(local_id=uuid.uuid4().hex, summary=summary))

            async def both() -> bool:
                _s, body = await api(server, "GET", "/api/v1/requests?state=all", "ann")
                return len(body["requests"]) == 2

            await wait_until(both, timeout=30, what="two requests")
            _s, body = await api(server, "GET", "/api/v1/requests?state=all", "ann")
            ids = {r["summary"]: r["id"] for r in body["requests"]}
            status, _ = await api(server, "POST", f"/api/v1/requests/{ids['first']}/resolve", "ann",
                                  {"category": "printer"})
            assert status == 200
            await wait_until(lambda: len(seen_a.asks) == 1, timeout=30, what="survey.ask on A")
            assert (seen_a.asks[0].request_id, seen_a.asks[0].summary, seen_a.asks[0].technician) == (
                ids["first"], "first", "ann")

            async with running_agent(state_b) as agent_b:
                seen_b = Seen(agent_b)
                await asyncio.wait_for(agent_b.client.ready.wait(), 30)
                foreign = SurveyAnswer(request_id=ids["first"], score=1, comment="not mine")
                await agent_b.client.send(foreign)
                await wait_until(lambda: bool(seen_b.errors), timeout=30, what="B refused")
                assert (seen_b.errors[0].code, seen_b.errors[0].in_reply_to) == ("survey_unknown", foreign.id)

            await agent_a.client.send(SurveyAnswer(request_id=ids["first"], score=5, comment="great"))
            again = SurveyAnswer(request_id=ids["first"], score=2)
            await agent_a.client.send(again)
            await wait_until(lambda: bool(seen_a.errors), timeout=30, what="second answer refused")
            assert (seen_a.errors[0].code, seen_a.errors[0].in_reply_to) == ("survey_answered", again.id)
            row = await server.db.fetchone("SELECT score, comment FROM surveys WHERE request_id = ?", (ids["first"],))
            assert row is not None and (row["score"], row["comment"]) == (5, "great")

        # A is offline now: the second request is resolved, its survey waits and goes out on connect.
        status, _ = await api(server, "POST", f"/api/v1/requests/{ids['second']}/resolve", "ann",
                              {"category": "network"})
        assert status == 200

        async def waiting() -> bool:
            row = await server.db.fetchone("SELECT delivered_at FROM surveys WHERE request_id = ?", (ids["second"],))
            return row is not None and row["delivered_at"] is None

        await wait_until(waiting, timeout=30, what="survey row of the offline device")
        async with running_agent(state_a) as agent_a:
            seen_again = Seen(agent_a)
            await wait_until(lambda: len(seen_again.asks) == 1, timeout=30, what="survey.ask after reconnect")
            assert seen_again.asks[0].request_id == ids["second"]


def test_csv_quotes_names_a_spreadsheet_would_run() -> None:
    """A technician or category named like a formula is written as text; rates as fractions, empty for no data."""
    r = Request(id="r", created_at=0.0, group="g", category="=HYPERLINK(\"x\")", resolved_by="@evil",
                events=(Event(0.0, "created"), Event(30.0, "claimed"), Event(90.0, "resolved")))
    text = to_csv(report([r], by="category", now=100.0))
    lines = text.split("\r\n")
    assert lines[0].startswith("bucket,requests,resolved,mtta_n,mtta_mean,mtta_median,mtta_p90,")
    assert lines[1].startswith("(all),1,1,1,30.0,30.0,30.0,")
    assert lines[2].startswith("\"'=HYPERLINK(\"\"x\"\")\",1,1,")
    by_tech = to_csv(report([r], by="technician", now=100.0)).split("\r\n")
    assert by_tech[2].startswith("'@evil,")


async def test_an_agent_without_the_survey_capability_is_not_asked(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent from before the survey (no 'survey' in hello) gets no survey.ask; the survey waits undelivered."""
    monkeypatch.setattr(control_client, "CAPABILITIES", [c for c in control_client.CAPABILITIES if c != "survey"])
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "a")
        async with running_agent(state) as agent:
            seen = Seen(agent)
            await asyncio.wait_for(agent.client.ready.wait(), 30)
            await agent.client.send(RequestOpen(local_id=uuid.uuid4().hex, summary="old agent"))

            async def one() -> bool:
                _s, body = await api(server, "GET", "/api/v1/requests?state=all", "ann")
                return len(body["requests"]) == 1

            await wait_until(one, timeout=30, what="request stored")
            _s, body = await api(server, "GET", "/api/v1/requests?state=all", "ann")
            rid = body["requests"][0]["id"]
            status, _ = await api(server, "POST", f"/api/v1/requests/{rid}/resolve", "ann", {"category": "x"})
            assert status == 200

            # Request events reach the subscribers one after the other, in commit order: once the device
            # has the status of a later event (a note), the survey's handling of 'resolved' is over.
            notes: list[str] = []

            async def on_status(_client: AgentClient, status: RequestStatus) -> None:
                notes.append(status.note)

            agent.client.register(RequestStatus, on_status)
            status, _ = await api(server, "POST", f"/api/v1/requests/{rid}/notes", "ann", {"text": "checkpoint"})
            assert status == 200
            await wait_until(lambda: "checkpoint" in notes, timeout=30, what="the note's status on the device")
            row = await server.db.fetchone("SELECT delivered_at FROM surveys WHERE request_id = ?", (rid,))
            assert row is not None and row["delivered_at"] is None and seen.asks == []
