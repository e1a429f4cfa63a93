"""Join and hand-off on an installed device (issue 16): the prompts and the indicator are the session helper's.

Real parts as in tests/test_session_helper.py: a real user with a real ``helpline agent session-helper`` process
on Xvfb, the root agent service with ``desktop = "helper"``, a real server, the Tk prompt clicked like a user
would. What must get through the helper's socket: the "my helpdesk may bring colleagues" checkbox (offered on the
first prompt, its tick back in the answer), a join asked as a join naming the joiner, and the indicator's people.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.consent.tk_app import ALLOW_BG, COLLEAGUES_BG, PROMPT_TITLE
from agent.desktop.remote_ui import RemoteIndicator
from server.auth.rights import ANY_GROUP, ROLE_RIGHTS, Principal
from tests.harness import wait_until
from tests.test_session_helper import Desk, agent_config, desk, helper_process, prompt_uids, request, root_service  # noqa: F401
from tests.test_session_helpers import (
    PRINCIPALS,
    api,
    click_colour,
    find_colour,
    viewer_for,
    wait_window,
    xdotool,
)

#: Run alone, after the parallel pass (scripts/test): creates local users and counts every prompt process on the box.
pytestmark = pytest.mark.serial

# ann's colleague, with rights on every group (as in tests/test_session_join.py).
PRINCIPALS.setdefault("tia", Principal("u6", "tia", "technician", {ANY_GROUP: ROLE_RIGHTS["technician"]}))
JOIN_HEADING = "tia asks to join the session and watch your screen"


def _lists_both(line: str) -> bool:
    """The indicator's people line ("Watching: ann (controls), tia") names both technicians."""
    names = line.removeprefix("Watching: ").split(" \u2014 ")[0].split(", ")
    return line.startswith("Watching: ") and {n.removesuffix(" (controls)") for n in names} == {"ann", "tia"}


async def test_join_prompt_colleagues_and_indicator_through_the_session_helper(tmp_path: Path,
                                                                               desk: Desk) -> None:  # noqa: F811
    """Session 1: the user ticks "may bring colleagues" in the helper's prompt, so tia's join needs no prompt and
    the helper's indicator lists ann and tia. Session 2: unticked, tia's join is a new question in the helper's
    window that names tia (and offers no checkbox); Allow admits her."""
    desk.sessions(active="c1")
    helper_log = tmp_path / "helper-a.log"
    async with root_service(tmp_path, desk) as (server, state, agent, broker):
        with helper_process(desk.a, "c1", desk.xa.display, desk.socket, helper_log):
            await wait_until(lambda: "c1" in broker.helpers, timeout=60, what="the session helper accepted")

            sid = await request(server, state.device_id, "view")
            async with viewer_for(server, sid, "ann") as ann:
                await wait_window(desk.xa.display, PROMPT_TITLE, timeout=30)
                await click_colour(desk.xa.display, COLLEAGUES_BG, timeout=20)
                await click_colour(desk.xa.display, ALLOW_BG, timeout=20)  # X delivers both clicks in order
                await ann.wait_for_updates(1, 30)
                running = agent.sessions.running[sid]
                assert running.colleagues  # the tick came back through the helper's answer
                assert (await api(server, "POST", f"/api/v1/sessions/{sid}/invite", "ann",
                                  {"technician": "tia"}))[0] == 200
                status, body = await api(server, "POST", f"/api/v1/sessions/{sid}/join", "tia", {})
                assert status == 200 and body["admitted"], body  # no second question
                assert prompt_uids() == set()
                assert isinstance(running.indicator, RemoteIndicator)
                first: RemoteIndicator = running.indicator
                await wait_until(lambda: _lists_both(first.people_line), timeout=30,
                                 what="the helper's indicator lists ann and tia")
                status, _body = await api(server, "POST", f"/api/v1/sessions/{sid}/end", "ann")
                assert status in (200, 202), _body
            await wait_until(lambda: sid not in agent.sessions.running, timeout=30, what="session 1 ended")

            sid2 = await request(server, state.device_id, "view")
            async with viewer_for(server, sid2, "ann") as ann:
                await wait_window(desk.xa.display, PROMPT_TITLE, timeout=30)
                # The pointer still rests where session 1's Allow was: move it off, or "mousemove --sync" waits.
                await asyncio.to_thread(xdotool, desk.xa.display, "mousemove", "1", "1")
                await click_colour(desk.xa.display, ALLOW_BG, timeout=20)  # the checkbox left unticked
                await ann.wait_for_updates(1, 30)
                assert not agent.sessions.running[sid2].colleagues
                assert (await api(server, "POST", f"/api/v1/sessions/{sid2}/invite", "ann",
                                  {"technician": "tia"}))[0] == 200
                # Invited, tia's join waits for the device's answer: the user's, in the helper's window.
                joining = asyncio.create_task(api(server, "POST", f"/api/v1/sessions/{sid2}/join", "tia", {}))
                await wait_until(lambda: f"consent prompt on screen: {JOIN_HEADING}" in helper_log.read_text(),
                                 timeout=30, what="the helper's window names tia as the joiner")
                assert prompt_uids() == {desk.a.uid}
                # The helper logs the prompt once Tk has it; X may paint it a moment later.
                await wait_until(lambda: find_colour(desk.xa.display, ALLOW_BG) is not None, timeout=15,
                                 what="the join prompt's Allow button painted")
                assert find_colour(desk.xa.display, COLLEAGUES_BG) is None  # no checkbox on a join question
                await click_colour(desk.xa.display, ALLOW_BG, timeout=20)
                status, body = await asyncio.wait_for(joining, 30)
                assert status == 200 and body["admitted"], body
                assert "tia" in agent.sessions.running[sid2].admitted
                running = agent.sessions.running[sid2]
                assert isinstance(running.indicator, RemoteIndicator)
                second: RemoteIndicator = running.indicator
                await wait_until(lambda: _lists_both(second.people_line), timeout=30,
                                 what="the indicator lists both after the asked join")
