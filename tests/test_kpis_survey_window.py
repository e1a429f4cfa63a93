"""The device's CSAT survey window (agent/help/survey_window.py) on a real X server, answered like a person."""

from __future__ import annotations

import asyncio

from agent.help import survey_window
from agent.help.survey import tk_shower
from protocol.surveys import SurveyAsk
from tests.test_session_helpers import click_colour, wait_window, xdotool
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

ASK = SurveyAsk(request_id="req-0a1b", number=12, summary="printer offline", technician="ann")


async def test_the_person_scores_comments_and_sends(xvfb: XvfbHandle) -> None:  # noqa: F811
    """Clicking the middle score (3), typing a comment and Send answers (3, comment); Send is off until a score."""
    shown = asyncio.create_task(tk_shower(xvfb.display, timeout_s=60)(ASK))
    await wait_window(xvfb.display, survey_window.TITLE, timeout=30)
    await click_colour(xvfb.display, survey_window.SEND_BG, timeout=10)  # disabled: nothing happens
    assert not shown.done()
    await click_colour(xvfb.display, survey_window.SCORE_BG, timeout=10)  # the row's middle: "3"
    await asyncio.to_thread(xdotool, xvfb.display, "type", "--delay", "20", "works again")
    await click_colour(xvfb.display, survey_window.SEND_BG, timeout=10)
    assert await asyncio.wait_for(shown, 30) == (3, "works again")
    await wait_window(xvfb.display, survey_window.TITLE, present=False, timeout=10)


async def test_not_now_answers_nothing(xvfb: XvfbHandle) -> None:  # noqa: F811
    """*Not now* closes the window and nothing is sent."""
    shown = asyncio.create_task(tk_shower(xvfb.display, timeout_s=60)(ASK))
    await wait_window(xvfb.display, survey_window.TITLE, timeout=30)
    await click_colour(xvfb.display, survey_window.LATER_BG, timeout=30)
    assert await asyncio.wait_for(shown, 30) is None


async def test_no_display_answers_nothing() -> None:
    """Without a display (a root service with no session) the survey is not shown and nothing is sent."""
    assert await tk_shower(None)(ASK) is None
