"""The CSAT survey in service mode (issue 19): ``desktop = "helper"`` shows it through the requester's helper.

The real parts of tests/test_help_helper.py: two Unix users made for the test, a session helper process
for each (run as that user), the agent service as root, logind's stand-in, a real server. User a asks
for help; by the time the request is resolved user b is in front of the device. The survey window opens
on a's display, drawn by a process of a's uid, never on b's; a's score and comment reach the server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from agent.help import survey_window
from protocol.desktop import LENGTH, DesktopConnection, SurveyDone, SurveyShow, encode_frame
from protocol.errors import LocalProtocolError
from tests.harness import wait_until
from tests.test_help_helper import as_user, runtime_dirs, service
from tests.test_help_request import requests_of
from tests.test_session_helper import Desk, desk  # noqa: F401 - fixture
from tests.test_session_helpers import api, click_colour, wait_for_audit, wait_window, xdotool

#: Run alone, after the parallel pass (scripts/test): creates local users and counts every survey window process on the box.
pytestmark = pytest.mark.serial


def _received(role: str, data: bytes) -> DesktopConnection:
    conn = DesktopConnection(role)  # type: ignore[arg-type]
    conn.receive_data(data)
    return conn


def test_survey_frames_go_one_way_each_and_are_validated() -> None:
    """survey.show only from the service, survey.done only from a helper; a score outside 1–5 or an oversized
    comment is an invalid frame; a helper's "not answered" (score null) decodes."""
    show = SurveyShow(survey_id="survey-1", number=12, summary="vpn drops", technician="ann")
    assert _received("helper", encode_frame(show)).events_received() == [show]
    assert _received("service", encode_frame(show)).error is not None
    with pytest.raises(LocalProtocolError):
        DesktopConnection("helper").send(show)
    assert _received("service", encode_frame(SurveyDone(survey_id="survey-1"))).events_received() == [
        SurveyDone(survey_id="survey-1", score=None)]
    for raw in ({"t": "survey.done", "survey_id": "survey-1", "score": 6},
                {"t": "survey.done", "survey_id": "survey-1", "score": 3, "comment": "x" * 1001},
                {"t": "survey.show", "survey_id": "s", "number": 1, "summary": "y" * 201}):
        body = msgspec.msgpack.encode(raw)
        role = "helper" if raw["t"] == "survey.show" else "service"
        assert _received(role, LENGTH.pack(len(body)) + body).error is not None, raw


def survey_uids() -> set[int]:
    """Real uids of the survey window processes running now."""
    found = set()
    for proc in psutil.process_iter(["cmdline", "uids"]):
        if "agent.help.survey_window" in (proc.info["cmdline"] or []):
            found.add(proc.info["uids"].real)
    return found


async def test_survey_reaches_the_requesters_helper_and_the_answer_the_server(tmp_path: Path,
                                                                              desk: Desk) -> None:  # noqa: F811
    """Resolved through the API, a's request asks a (not b, who is in front now) in a window of a's uid on a's
    display; a's 3 and comment are stored (KPIs: 1 asked, 1 answered, CSAT 3) and audited from the device."""
    desk.sessions(active="c1")
    with runtime_dirs(desk.a, desk.b) as runtime:
        async with service(tmp_path, desk, runtime) as (server, _agent):
            sent = await asyncio.to_thread(as_user, desk.a, runtime[desk.a.name], desk.socket_dir, "help", "--send",
                                           "vpn drops", "--no-screenshot")
            assert sent.returncode == 0, sent.stderr
            found: list[dict[str, Any]] = []

            async def arrived() -> bool:
                found[:] = await requests_of(server)
                return bool(found)

            await wait_until(arrived, timeout=30, what="the request at the server")
            rid = found[0]["id"]
            assert found[0]["requester"] == desk.a.name
            desk.sessions(active="c2")  # b is in front now: the survey is still a's
            status, _ = await api(server, "POST", f"/api/v1/requests/{rid}/resolve", "ann", {"category": "network"})
            assert status == 200
            await wait_window(desk.xa.display, survey_window.TITLE, timeout=60)
            assert survey_uids() == {desk.a.uid}
            await wait_window(desk.xb.display, survey_window.TITLE, present=False, timeout=2)
            await click_colour(desk.xa.display, survey_window.SCORE_BG, timeout=10, settled=True)  # the row's middle: "3"
            await asyncio.to_thread(xdotool, desk.xa.display, "type", "--delay", "20", "fast and kind")
            await click_colour(desk.xa.display, survey_window.SEND_BG, timeout=10)
            record = await wait_for_audit(server, "survey.answer", timeout=30)
            assert record["target"] == rid and record["actor"].startswith("device:")
            row = await server.db.fetchone("SELECT score, comment FROM surveys WHERE request_id = ?", (rid,))
            assert row is not None and (row["score"], row["comment"]) == (3, "fast and kind")
            _status, report = await api(server, "GET", "/api/v1/kpis", "ann")
            total = report["total"]
            assert (total["surveys_asked"], total["surveys_answered"]) == (1, 1)
            assert total["csat"]["mean"] == 3.0
            await wait_window(desk.xa.display, survey_window.TITLE, present=False, timeout=10)
