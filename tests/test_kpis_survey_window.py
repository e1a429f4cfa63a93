"""The device's CSAT survey window (agent/help/survey_window.py) on a real X server, answered like a person."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.help import survey, survey_window
from agent.help.survey import tk_shower
from protocol.requests import RequestOpen
from protocol.surveys import SurveyAnswer, SurveyAsk
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import api, click_colour, install_test_auth, wait_for_audit, wait_window, xdotool
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

ASK = SurveyAsk(request_id="req-0a1b", number=12, summary="printer offline", technician="ann")


async def test_the_person_scores_comments_and_sends(xvfb: XvfbHandle) -> None:  # noqa: F811
    """Clicking the middle score (3), typing a comment and Send answers (3, comment)."""
    shown = asyncio.create_task(tk_shower(xvfb.display, timeout_s=60)(ASK))
    await wait_window(xvfb.display, survey_window.TITLE, timeout=30)
    await click_colour(xvfb.display, survey_window.SCORE_BG, timeout=10, settled=True)  # the row's middle: "3"
    await asyncio.to_thread(xdotool, xvfb.display, "type", "--delay", "20", "works again")
    await click_colour(xvfb.display, survey_window.SEND_BG, timeout=10)
    assert await asyncio.wait_for(shown, 30) == (3, "works again")
    await wait_window(xvfb.display, survey_window.TITLE, present=False, timeout=10)


async def test_send_is_off_until_a_score(xvfb: XvfbHandle) -> None:  # noqa: F811
    """Send clicked before any score, then Not now: the window's one line is "dismissed". Tk handles the clicks
    in order, so a Send that answered without a score would have written its answer line first."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.help.survey_window", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "DISPLAY": xvfb.display})
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b'{"number": 12, "summary": "printer offline", "technician": "ann"}\n')
        await proc.stdin.drain()
        assert json.loads(await asyncio.wait_for(proc.stdout.readline(), 30)) == {"event": "ready"}
        await wait_window(xvfb.display, survey_window.TITLE, timeout=30)
        await click_colour(xvfb.display, survey_window.SEND_BG, timeout=10)
        await click_colour(xvfb.display, survey_window.LATER_BG, timeout=10)
        assert json.loads(await asyncio.wait_for(proc.stdout.readline(), 30)) == {"event": "dismissed"}
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


async def test_a_window_that_cannot_start_or_says_junk_answers_nothing(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No interpreter to start the window (OSError) and a window whose lines are JSON but not objects: None,
    not an exception that ends the survey worker."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / "missing-python"))
    assert await tk_shower(":99", timeout_s=5)(ASK) is None
    junk = tmp_path / "junk-window"
    junk.write_text("#!/bin/sh\necho '[1, 2]'\necho '\"answer\"'\n")
    junk.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(junk))
    assert await tk_shower(":99", timeout_s=5)(ASK) is None


class FlakyClient:
    """A control client that does not notice a drop at once: ``ready`` stays set, sends fail until it has."""

    def __init__(self, noticed_after_s: float) -> None:
        self.ready = asyncio.Event()
        self.ready.set()
        self.until = time.monotonic() + noticed_after_s
        self.sent: list[SurveyAnswer] = []
        self.failures = 0

    async def send(self, message: SurveyAnswer) -> None:
        if time.monotonic() < self.until:
            self.failures += 1
            raise ConnectionError("control channel is not connected")
        self.sent.append(message)


async def test_an_answer_survives_a_drop_the_client_has_not_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The person answered; the first sends fail while ``ready`` is still set: the answer is sent once the
    channel is back, not given up after a burst of instant retries."""
    monkeypatch.setattr(survey, "RETRY_S", 0.1)
    client = FlakyClient(noticed_after_s=1.0)

    async def person(_ask: SurveyAsk) -> tuple[int, str]:
        return 4, "thanks"

    desk = survey.SurveyDesk(client, person)  # type: ignore[arg-type]  # the stub has what the desk uses
    await desk.on_ask(client, ASK)  # type: ignore[arg-type]
    await wait_until(lambda: len(client.sent) == 1, timeout=30, what="the answer sent after the drop")
    assert client.sent[0].score == 4 and client.failures >= 1


async def test_not_now_answers_nothing(xvfb: XvfbHandle) -> None:  # noqa: F811
    """*Not now* closes the window and nothing is sent."""
    shown = asyncio.create_task(tk_shower(xvfb.display, timeout_s=60)(ASK))
    await wait_window(xvfb.display, survey_window.TITLE, timeout=30)
    await click_colour(xvfb.display, survey_window.LATER_BG, timeout=30)
    assert await asyncio.wait_for(shown, 30) is None


async def test_no_display_answers_nothing() -> None:
    """Without a display (a root service with no session) the survey is not shown and nothing is sent."""
    assert await tk_shower(None)(ASK) is None


async def test_resolved_request_asks_on_the_device_and_the_answer_is_stored(tmp_path: Path,
                                                                           xvfb: XvfbHandle) -> None:  # noqa: F811
    """The whole survey: a request opened by a real agent is resolved through the API; the agent (as
    build_agent composes it) shows the window on its display; the person clicks 3 and Send; the server
    stores the answer (CSAT 3 from 1 of 1 asked) and audits survey.answer. A reopen and second resolution
    asks nothing more."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "a")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, display=xvfb.display)
        async with running_agent(state, config) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 30)
            local_id = uuid.uuid4().hex
            await agent.client.send(RequestOpen(local_id=local_id, summary="printer offline", requester="tester"))

            async def opened() -> bool:
                _status, body = await api(server, "GET", "/api/v1/requests?state=all", "ann")
                return len(body["requests"]) == 1

            await wait_until(opened, timeout=30, what="request stored")
            _status, body = await api(server, "GET", "/api/v1/requests?state=all", "ann")
            rid = body["requests"][0]["id"]
            status, _ = await api(server, "POST", f"/api/v1/requests/{rid}/resolve", "ann", {"category": "printer"})
            assert status == 200
            await wait_window(xvfb.display, survey_window.TITLE, timeout=30)
            await click_colour(xvfb.display, survey_window.SCORE_BG, timeout=10, settled=True)
            await click_colour(xvfb.display, survey_window.SEND_BG, timeout=10)
            record = await wait_for_audit(server, "survey.answer", timeout=30)
            assert record["target"] == rid and record["actor"] == f"device:{state.device_id}"
            _status, report = await api(server, "GET", "/api/v1/kpis", "ann")
            total = report["total"]
            assert (total["surveys_asked"], total["surveys_answered"], total["csat"]["mean"]) == (1, 1, 3.0)
            for action in ("reopen", "resolve"):
                status, _ = await api(server, "POST", f"/api/v1/requests/{rid}/{action}", "ann",
                                      {"category": "printer"} if action == "resolve" else None)
                assert status == 200
            row = await server.db.fetchone("SELECT COUNT(*) AS n FROM surveys")
            assert row is not None and row["n"] == 1
            await wait_window(xvfb.display, survey_window.TITLE, present=False, timeout=5)
