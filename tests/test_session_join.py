"""Join and hand-off (issue 16): a real server and agent on Xvfb, several technicians in one screen session.

A colleague joins (the device is asked: the scripted consent seam answers like the user would), sees the
whole current screen at once, gets control by hand-off while the previous controller's input is refused;
a viewer that stops reading does not slow the other; the indicator lists everyone; and the refusals:
control for a viewer-role account, a technician of another group, the device user saying No.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect

from agent.consent.scripted import ScriptedConsentUI
from agent.sessions import RunningSession, _CountingTunnel
from agent.viewer import Viewer
from certs import tls
from protocol import stream
from protocol.session import SessionMachine, SessionOffer, viewer_mark
from server import audit
from server.auth.rights import ANY_GROUP, ROLE_RIGHTS, Principal
from server.sessions import SESSIONS
from server.sessions import relay as relay_module
from tests.harness import console_url, enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import (
    PRINCIPALS,
    api,
    click_canvas_until_pointer_moves,
    configure_agent,
    install_test_auth,
    paint_root,
    viewer_for,
    xdotool,
)
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

# A second technician with rights on every group (ann's colleague).
PRINCIPALS.setdefault("tia", Principal("u6", "tia", "technician", {ANY_GROUP: ROLE_RIGHTS["technician"]}))


async def _audit_records(server: Any, action: str) -> list[dict[str, Any]]:
    """Audit records of ``action``, oldest first."""
    return [_parsed(r) for r in reversed(await audit.recent(server.db, limit=200, action=action))]


def _parsed(row: Any) -> dict[str, Any]:
    details = row["details"]
    return {**dict(row), "details": json.loads(details) if isinstance(details, str) else dict(details or {})}


async def _people(server: Any, sid: str, user: str = "ann") -> dict[str, Any]:
    status, body = await api(server, "GET", f"/api/v1/sessions/{sid}/people", user)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def _start(server: Any, state: Any, mode: str = "control") -> str:
    status, body = await api(server, "POST", f"/api/v1/devices/{state.device_id}/sessions", "ann",
                             {"mode": mode, "reason": "printer"})
    assert status == 201, body
    return str(body["session_id"])


def _fill(viewer: Viewer) -> float:
    """Share of the viewer's framebuffer that is not black (a full screen of a painted colour is 1.0)."""
    fb = viewer.framebuffer
    return float(np.count_nonzero(fb.any(axis=2))) / max(1, fb.shape[0] * fb.shape[1])


async def test_join_full_screen_hand_off_and_refused_input(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Tia joins ann's control session with the device's consent, sees the whole screen at once, is listed on the
    indicator; her input is refused until ann hands control over, then ann's is refused; all of it audited."""
    paint_root(xvfb.display, "#3366cc")
    ui = ScriptedConsentUI([True, True])
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "a")
        async with running_agent(state, setup=configure_agent(xvfb.display, ui)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _start(server, state)
            async with viewer_for(server, sid, "ann") as ann:
                await ann.wait_for_updates(1, 20)
                status, body = await api(server, "POST", f"/api/v1/sessions/{sid}/join", "tia", {})
                assert status == 202 and body["admitted"] is False and body["asking"] == ["tia"]
                status, body = await api(server, "POST", f"/api/v1/sessions/{sid}/invite", "tia",
                                         {"technician": "tia"})
                assert status == 409 and body["error"]["code"] == "invite_refused"  # only the controller invites
                status, body = await api(server, "POST", f"/api/v1/sessions/{sid}/invite", "ann",
                                         {"technician": "tia"})
                assert status == 200, body
                await wait_until(lambda: "tia" in server.console_app[SESSIONS].live[sid].people.viewers,
                                 timeout=20, what="tia admitted by the device")
                assert ui.requests[-1].join and ui.requests[-1].technician == "tia"
                assert ui.requests[0].colleagues_option and not ui.requests[-1].colleagues_option
                running = agent.sessions.running[sid]
                assert running.admitted == {"ann", "tia"}
                indicator = ui.indicators[-1]
                await wait_until(lambda: indicator.viewers == ("ann", "tia"), what="the indicator lists both")
                assert indicator.controller == "ann"

                connected = time.monotonic()
                async with viewer_for(server, sid, "tia") as tia:
                    # A complete current screen at once, though the screen has not changed since ann's first frame.
                    await tia.wait_for(lambda v: _fill(v) > 0.99, timeout=10)
                    full_screen_s = time.monotonic() - connected
                    assert tia.monitors and tia.framebuffer.shape[:2] == (xvfb.height, xvfb.width)
                    print(f"joiner's complete screen after {full_screen_s * 1000:.0f} ms")

                    await tia.click(10, 10)  # not the controller: refused by the relay, answered, audited
                    record = await _wait_audit(server, "session.input_refused", actor="user:tia")
                    assert record["details"]["why"] == "not the controlling technician"

                    status, body = await api(server, "POST", f"/api/v1/sessions/{sid}/hand", "ann",
                                             {"technician": "tia"})
                    assert status == 200 and body["controller"] == "tia", body
                    assert running.controller == "tia"
                    await wait_until(lambda: indicator.controller == "tia", what="the indicator shows tia controls")

                    # Tia's input now reaches the device; ann's is refused.
                    await tia.send_mouse(123, 77)
                    await wait_until(lambda: "x:123 y:77" in xdotool(xvfb.display, "getmouselocation"),
                                     timeout=10, what="tia's pointer move injected")
                    refused_before = agent.sessions.running[sid].refused_not_controller
                    await ann.send_mouse(300, 200)
                    await _wait_audit(server, "session.input_refused", actor="user:ann")
                    await asyncio.sleep(0)  # nothing to wait for: the relay dropped it
                    assert "x:300 y:200" not in xdotool(xvfb.display, "getmouselocation")
                    assert agent.sessions.running[sid].refused_not_controller == refused_before

                    # Ann leaves; tia stays in control and the session goes on.
                    status, body = await api(server, "POST", f"/api/v1/sessions/{sid}/leave", "ann")
                    assert status == 200 and body["viewers"] == ["tia"] and body["controller"] == "tia"
                    await wait_until(lambda: indicator.viewers == ("tia",), what="the indicator drops ann")
                    await asyncio.wait_for(ann.closed.wait(), 10)
                    # Out of it, ann can no longer end or steer the session.
                    assert (await api(server, "POST", f"/api/v1/sessions/{sid}/end", "ann"))[0] == 403
                    assert sid in agent.sessions.running
            await wait_until(lambda: sid not in agent.sessions.running, timeout=15, what="last one out ends it")
            actions = [r["action"] for r in map(_parsed, reversed(await audit.recent(server.db, limit=500)))
                       if r["details"].get("session_id") == sid]
            for action in ("session.join_asked", "session.invite_refused", "session.invited", "session.joined",
                           "session.handed_off", "session.left", "session.ended"):
                assert action in actions, (action, actions)
            device_log = [json.loads(line) for line in
                          (state.directory / "device-audit.jsonl").read_text().splitlines() if line.strip()]
            events = [e["event"] for e in device_log]
            assert "session.join" in events and "session.control_moved" in events


async def _wait_audit(server: Any, action: str, actor: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for record in await _audit_records(server, action):
            if record["actor"] == actor:
                return record
        if time.monotonic() > deadline:
            raise AssertionError(f"no {action} audit record by {actor}")
        await asyncio.sleep(0.05)


async def test_slow_viewer_does_not_slow_the_other(tmp_path: Path, xvfb: XvfbHandle,  # noqa: F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A joiner that stops reading (tiny receive buffer, never reads) is dropped to the next complete screen by
    the relay; the controller's frames keep coming at full pace meanwhile."""
    monkeypatch.setattr(relay_module, "VIEWER_MAX_BYTES", 256 * 1024)
    ui = ScriptedConsentUI([True], colleagues=True)  # "my helpdesk may bring colleagues": no second question
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "a")
        async with running_agent(state, setup=configure_agent(xvfb.display, ui)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _start(server, state, mode="view")
            async with viewer_for(server, sid, "ann") as ann:
                await ann.wait_for_updates(1, 20)
                assert (await api(server, "POST", f"/api/v1/sessions/{sid}/invite", "ann",
                                  {"technician": "tia"}))[0] == 200
                status, body = await api(server, "POST", f"/api/v1/sessions/{sid}/join", "tia", {"reason": "learn"})
                assert status == 200 and body["admitted"], body
                assert len(ui.requests) == 1  # the first prompt's checkbox covered the join
                joined = await _audit_records(server, "session.joined")
                assert joined[-1]["details"]["reason"] == "the user allowed colleagues at the first prompt"

                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("localhost", server.console_port))
                url = f"wss://localhost:{server.console_port}/api/v1/sessions/{sid}/stream"
                slow = await connect(url, sock=sock, server_hostname="localhost", max_queue=1,
                                     ssl=tls.agent_client_context(server.pki.ca_pem, None, None),
                                     additional_headers={"Origin": console_url(server), "X-Test-User": "tia"})
                player = subprocess.Popen(
                    ["ffplay", "-f", "lavfi", "-i", "testsrc2=size=640x480:rate=30", "-an", "-loglevel", "error",
                     "-noborder", "-left", "0", "-top", "0"],
                    env={**xvfb.env(), "SDL_AUDIODRIVER": "dummy"}, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    relay = server.console_app[SESSIONS].live[sid].relay
                    assert relay is not None
                    await wait_until(lambda: "tia" in relay.viewers and relay.viewers["tia"].resyncs >= 1,
                                     timeout=30, what="the slow viewer fell behind")
                    first, t0 = ann.stats.updates, time.monotonic()
                    await asyncio.sleep(4.0)  # a measurement window, not a synchronisation
                    rate = (ann.stats.updates - first) / (time.monotonic() - t0)
                    slow_state = relay.viewers["tia"]
                    print(f"controller's updates/s while a viewer stalls: {rate:.1f}; slow viewer dropped "
                          f"{slow_state.dropped} messages, {slow_state.resyncs} resyncs")
                    assert rate >= 5.0
                    assert slow_state.dropped > 0
                finally:
                    player.terminate()
                    try:
                        player.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        player.kill()
                        player.wait(timeout=5)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(slow.close(), 5)


async def test_refusals(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Control for a viewer-role account (403), a technician of another group (404 like a missing session), and a
    join the device user says No to (403) are refused and audited; the session goes on."""
    ui = ScriptedConsentUI([True, True, False])
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "a", group="lab")
        async with running_agent(state, setup=configure_agent(xvfb.display, ui)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _start(server, state)
            async with viewer_for(server, sid, "ann") as ann:
                await ann.wait_for_updates(1, 20)
                # Another group's technician: the session is not theirs to see at all.
                status, _ = await api(server, "POST", f"/api/v1/sessions/{sid}/join", "bob", {})
                assert status == 404
                # A viewer-role account joins (view is fine) but is refused control.
                assert (await api(server, "POST", f"/api/v1/sessions/{sid}/invite", "ann",
                                  {"technician": "vic"}))[0] == 200
                status, body = await api(server, "POST", f"/api/v1/sessions/{sid}/join", "vic", {})
                assert status == 200, body
                status, body = await api(server, "POST", f"/api/v1/sessions/{sid}/hand", "ann",
                                         {"technician": "vic"})
                assert status == 403 and body["error"]["code"] == "handoff_refused", body
                refused = await _audit_records(server, "session.handoff_refused")
                assert refused[-1]["details"]["technician"] == "vic"
                assert agent.sessions.running[sid].controller == "ann"
                # The device user says No to tia.
                assert (await api(server, "POST", f"/api/v1/sessions/{sid}/invite", "ann",
                                  {"technician": "tia"}))[0] == 200
                status, body = await api(server, "POST", f"/api/v1/sessions/{sid}/join", "tia", {})
                assert status == 403 and body["error"]["code"] == "join_refused", body
                assert "tia" not in agent.sessions.running[sid].admitted
                record = (await _audit_records(server, "session.join_refused"))[-1]
                assert record["details"]["technician"] == "tia" and record["details"]["by"] == "user"
                # Not admitted: no stream.
                with pytest.raises(Exception) as no_stream:
                    await viewer_for(server, sid, "tia").connect()
                assert "403" in str(no_stream.value)
                people = await _people(server, sid)
                assert people["viewers"] == ["ann", "vic"] and people["controller"] == "ann"
                assert not ann.closed.is_set()


async def test_agent_refuses_input_from_a_technician_who_does_not_control() -> None:
    """Whatever the server passes on, the agent takes input only from the controller it was told about and
    admitted: after a mark naming someone else, input is refused and answered; acks always pass."""

    class FakeWs:
        def __init__(self, incoming: list[str]) -> None:
            self.incoming, self.sent = list(incoming), []  # type: list[str], list[str | bytes]

        async def recv(self) -> str:
            return self.incoming.pop(0)

        async def send(self, data: str | bytes) -> None:
            self.sent.append(data)

    offer = SessionOffer(session_id="s-1", technician="ann", technician_user="ann", technician_role="technician",
                         mode="control", tunnel_token="t" * 43)
    running = RunningSession(offer, "control", None, SessionMachine("s-1", "control", created_at=0.0),
                             admitted={"ann", "tia"}, viewers=["ann", "tia"], controller="ann")
    key = stream.encode_text(stream.InputKey(code="KeyA", action="down"))
    ack = stream.encode_text(stream.Ack(seq=3))
    ws = FakeWs([key, viewer_mark("tia"), key, ack, viewer_mark("eve"), key, viewer_mark("ann"), key])
    tunnel = _CountingTunnel(ws, running)  # type: ignore[arg-type]
    assert await tunnel.recv() == key  # before any mark: the requester's, as always
    assert await tunnel.recv() == ack  # tia's key refused, her ack passes
    assert await tunnel.recv() == key  # eve (never admitted) refused; ann's key taken
    assert running.refused_not_controller == 2
    errors = [json.loads(m) for m in ws.sent if isinstance(m, str)]
    assert [e["code"] for e in errors] == ["not_controller", "not_controller"]


async def test_people_box_in_the_console(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """In Chromium: tess invites tia from the People box, tia asks to join and (device allows) sees the screen,
    tess hands her control, tia's click moves the device's pointer, tess leaves and tia's session goes on."""
    from playwright.async_api import expect

    from tests.test_accounts_support import make_user
    from tests.test_console_support import Console, console_browser

    colour = (0x33, 0x99, 0x66)
    paint_root(xvfb.display, "#" + bytes(colour).hex())
    async with running_server(tmp_path / "srv") as server:
        tess = await make_user(server, "tess", "technician", groups={"lab": None})
        tia = await make_user(server, "tia", "technician", groups={"lab": None})
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        ui = ScriptedConsentUI([True, True])
        async with running_agent(state, setup=configure_agent(xvfb.display, ui)) as agent, \
                console_browser(server) as first:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            page = first.page
            await first.login(tess)
            await page.goto(f"{first.base}/#/devices/{state.device_id}")
            await page.click("#start-control")
            await page.fill("#session-reason", "printer")
            await page.click("#session-confirm")
            await expect(page.locator("#consent-banner")).to_have_attribute("data-mode", "control", timeout=20_000)
            sid = page.url.rsplit("/", 1)[1]
            people = page.locator("#people-list")
            await expect(people.locator("li[data-name='tess']")).to_contain_text("(controls)", timeout=10_000)
            await expect(page.locator("#people-invite-pick option[value='tia']")).to_have_count(1, timeout=10_000)
            await page.select_option("#people-invite-pick", "tia")
            await page.click("#people-invite")
            await expect(people.locator("li[data-name='tia']")).to_contain_text("invited", timeout=10_000)

            context = await first.browser.new_context(viewport={"width": 1360, "height": 860})
            second = Console(first.browser, context, await context.new_page(), first.base)
            await second.login(tia)
            other = second.page
            await other.goto(f"{second.base}/#/sessions/{sid}")
            await other.click("#people-join")

            async def shows_screen() -> bool:
                pixel = await other.evaluate("""() => { const c = document.querySelector('#screen');
                    if (c.width < 100) return null;
                    return Array.from(c.getContext('2d').getImageData(5, c.height - 5, 1, 1).data); }""")
                return pixel is not None and all(abs(a - b) <= 12 for a, b in zip(pixel[:3], colour))

            await wait_until(shows_screen, timeout=30, what="the joiner's canvas shows the device's screen")
            await expect(people.locator("li[data-name='tia']")).to_contain_text("(watches)", timeout=10_000)
            assert ui.indicators[-1].viewers == ("tess", "tia")

            await page.click("li[data-name='tia'] .people-hand")
            await expect(other.locator("#people-list li[data-name='tia']")).to_contain_text("(controls)",
                                                                                         timeout=10_000)
            await expect(other.locator("#people-status")).to_have_text("tia controls.")
            # The page says "tia controls." once the server handed over; a click in the moment before the
            # device applied it is refused there: click again until one lands.
            await click_canvas_until_pointer_moves(xvfb.display, other, 0.5, 0.25)
            await page.click("#people-leave")
            await expect(other.locator("#people-list li")).to_have_count(1, timeout=10_000)
            assert sid in agent.sessions.running and agent.sessions.running[sid].controller == "tia"
            for console in (first, second):
                assert console.csp_violations() == []
                assert not [e for e in console.errors if e.startswith("pageerror")]
            await context.close()


async def test_tk_prompt_colleagues_checkbox_and_indicator_people(xvfb: XvfbHandle) -> None:  # noqa: F811
    """The real Tk windows: the first prompt's "may bring colleagues" checkbox is unticked unless the user ticks it;
    a join prompt has none; the indicator shows everyone watching and who controls."""
    from agent.consent.tk import TkConsentUI
    from agent.consent.tk_app import ALLOW_BG, COLLEAGUES_BG
    from agent.consent.ui import IndicatorInfo, PromptRequest
    from tests.test_session_helpers import click_colour, find_colour

    ui = TkConsentUI(xvfb.display)
    first = PromptRequest(technician="ann", mode="view", reason="printer", timeout_s=30, colleagues_option=True)
    asked = asyncio.create_task(ui.prompt(first))
    await click_colour(xvfb.display, ALLOW_BG, timeout=20)
    answer = await asyncio.wait_for(asked, 20)
    assert answer.allowed and not answer.colleagues  # unticked by default

    asked = asyncio.create_task(ui.prompt(first))
    await click_colour(xvfb.display, COLLEAGUES_BG, timeout=20)
    await click_colour(xvfb.display, ALLOW_BG, timeout=20)  # X delivers both clicks in order
    answer = await asyncio.wait_for(asked, 20)
    assert answer.allowed and answer.colleagues

    asked = asyncio.create_task(ui.prompt(PromptRequest(technician="tia", mode="view", reason="", timeout_s=30,
                                                        join=True)))
    await wait_until(lambda: find_colour(xvfb.display, ALLOW_BG) is not None, timeout=20, what="join prompt drawn")
    assert find_colour(xvfb.display, COLLEAGUES_BG) is None  # no checkbox on a join question
    await click_colour(xvfb.display, ALLOW_BG, timeout=20)
    answer = await asyncio.wait_for(asked, 20)
    assert answer.allowed and not answer.colleagues

    indicator = await ui.indicator(IndicatorInfo(technician="ann", mode="control"))
    try:
        await indicator.set_people(("ann", "tia"), "tia")
        await asyncio.wait_for(indicator.people_shown.wait(), 10)
        assert indicator.people_line == "Watching: ann, tia (controls)"
        await indicator.set_people(("tia",), None)
        await asyncio.wait_for(indicator.people_shown.wait(), 10)
        assert indicator.people_line == "Watching: tia \u2014 nobody controls"
    finally:
        await indicator.close()


async def test_a_joiner_whose_rights_are_taken_away_is_removed(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Taking remote_view away from a technician who joined removes them from the session (stream closed,
    audited as left), and the requester goes on."""
    from server.accounts import admin

    ui = ScriptedConsentUI([True], colleagues=True)
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        await admin.create_account(server.db, "tia", "technician", actor="test", password="pw-tia-0123456789")
        await admin.assign_rights(server.db, "tia", "*", None, actor="test")
        state = await enroll_agent(server, tmp_path / "a")
        async with running_agent(state, setup=configure_agent(xvfb.display, ui)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _start(server, state, mode="view")
            async with viewer_for(server, sid, "ann") as ann:
                await ann.wait_for_updates(1, 20)
                assert (await api(server, "POST", f"/api/v1/sessions/{sid}/invite", "ann",
                                  {"technician": "tia"}))[0] == 200
                assert (await api(server, "POST", f"/api/v1/sessions/{sid}/join", "tia", {}))[0] == 200
                async with viewer_for(server, sid, "tia") as tia:
                    await tia.wait_for_updates(1, 20)
                    await admin.remove_rights(server.db, "tia", "*", actor="test")
                    await asyncio.wait_for(tia.closed.wait(), 20)
                record = (await _audit_records(server, "session.left"))[-1]
                assert record["actor"] == "user:tia" and record["details"]["how"].startswith("removed:")
                assert (await _people(server, sid))["viewers"] == ["ann"]
                assert not ann.closed.is_set() and sid in agent.sessions.running


async def test_after_a_hand_off_an_upgrade_names_the_new_controller(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """In a view session handed to tia, tia asks for control: the device's question names tia (not the requester),
    and the requester, now a viewer, may not ask for another mode."""
    ui = ScriptedConsentUI([True, True], colleagues=True)
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "a")
        async with running_agent(state, setup=configure_agent(xvfb.display, ui)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _start(server, state, mode="view")
            async with viewer_for(server, sid, "ann") as ann:
                await ann.wait_for_updates(1, 20)
                assert (await api(server, "POST", f"/api/v1/sessions/{sid}/invite", "ann",
                                  {"technician": "tia"}))[0] == 200
                assert (await api(server, "POST", f"/api/v1/sessions/{sid}/join", "tia", {}))[0] == 200
                assert (await api(server, "POST", f"/api/v1/sessions/{sid}/hand", "ann",
                                  {"technician": "tia"}))[0] == 200
                status, body = await api(server, "POST", f"/api/v1/sessions/{sid}/mode", "ann", {"mode": "control"})
                assert status == 403, body
                status, body = await api(server, "POST", f"/api/v1/sessions/{sid}/mode", "tia", {"mode": "control"})
                assert status == 202, body
                await wait_until(lambda: agent.sessions.running[sid].mode == "control", timeout=20,
                                 what="control enabled")
                asked = ui.requests[-1]
                assert asked.upgrade and asked.technician == "tia" and asked.mode == "control"


async def test_what_the_agent_says_before_the_controller_attaches_reaches_them(tmp_path: Path,
                                                                              xvfb: XvfbHandle) -> None:  # noqa: F811
    """The agent's toolkit announcement (caps) sent while no stream is attached waits for the controller's
    stream instead of being dropped (the screen is resent in full on attach anyway)."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "a")
        async with running_agent(state, setup=configure_agent(xvfb.display, ScriptedConsentUI([True]))) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await _start(server, state, mode="view")
            live = server.console_app[SESSIONS].live
            await wait_until(lambda: sid in live and live[sid].relay is not None
                             and live[sid].relay.agent_ws is not None, timeout=20, what="the agent's tunnel first")
            async with viewer_for(server, sid, "ann") as ann:
                await ann.wait_for(lambda v: v.caps is not None and v.stats.updates >= 1, timeout=20)
            assert sid in agent.sessions.running or sid in agent.sessions.finished


async def test_invite_candidates_include_admins_and_technicians_of_the_group(tmp_path: Path) -> None:
    """Who the controller may invite: enabled accounts with remote_view on the group — admins hold it everywhere."""
    from server.sessions.api import _candidates
    from tests.test_accounts_support import make_user

    async with running_server(tmp_path / "srv") as server:
        await make_user(server, "ada", "admin")
        await make_user(server, "tess", "technician", groups={"lab": None})
        await make_user(server, "otto", "technician", groups={"other": None})
        assert await _candidates(server.db, "lab", ["tess"]) == ["ada"]
        assert await _candidates(server.db, "lab", []) == ["ada", "tess"]
