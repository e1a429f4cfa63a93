"""Recorded sessions in the console (Chromium): the device's session history says who asked and who
consented, and the player replays the recorded stream onto a canvas; fetching a recording needs
REMOTE_VIEW and is audited."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from playwright.async_api import expect

from agent.consent.scripted import ScriptedConsentUI
from server.auth.rights import Right
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_accounts_support import client, login, make_user
from tests.test_console_support import console_browser
from tests.test_session_helpers import (
    api,
    configure_agent,
    install_test_auth,
    paint_root,
    viewer_for,
    wait_for_audit,
)
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

ROOT_COLOUR = (0x2E, 0x8B, 0x57)
LATER_COLOUR = (0x8B, 0x2E, 0x57)


def _near(pixel: list[int], colour: tuple[int, int, int]) -> bool:
    return all(abs(int(a) - int(b)) <= 12 for a, b in zip(pixel[:3], colour))


async def test_recorded_session_plays_back_onto_the_canvas(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """A recorded session shows consent and end reason in the history; the player draws its frames on the canvas."""
    subprocess.run(["xsetroot", "-display", xvfb.display, "-solid", "#" + bytes(ROOT_COLOUR).hex()], check=True,
                   timeout=10)
    async with running_server(tmp_path / "srv", session_recording=True,
                              recordings_dir=tmp_path / "recordings") as server:
        install_test_auth(server)
        root = await make_user(server, "root", "admin")
        vera = await make_user(server, "vera", "viewer", groups={"lab": Right.VIEW_INVENTORY})
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        async with running_agent(state, setup=configure_agent(xvfb.display, ScriptedConsentUI([True]))) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            status, body = await api(server, "POST", f"/api/v1/devices/{state.device_id}/sessions", "ann",
                                     {"mode": "view", "reason": "ticket 7"})
            assert status == 201, body
            sid = body["session_id"]
            async with viewer_for(server, sid) as viewer:
                await viewer.wait_for_updates(1, 15)  # a one-colour screen is one exact FILL: no refresh follows
                await asyncio.to_thread(paint_root, xvfb.display, "#" + bytes(LATER_COLOUR).hex())
                bgr = (LATER_COLOUR[2], LATER_COLOUR[1], LATER_COLOUR[0])
                await viewer.wait_for(lambda v: v.framebuffer.shape[0] > 700
                                      and _near(list(v.framebuffer[700, 5]), bgr), 15)
                status, _ = await api(server, "POST", f"/api/v1/sessions/{sid}/end", "ann")
                assert status == 200
            await wait_until(lambda: (tmp_path / "recordings" / f"{sid}.json").exists(), what="recording metadata")

        async with client(server) as http:
            assert (await login(http, vera)).status == 200
            async with http.get(f"/api/v1/sessions/{sid}/recording/data") as resp:
                assert resp.status == 403
        async with console_browser(server) as console:
            page = console.page
            await console.login(root)
            await page.goto(f"{console.base}/#/devices/{state.device_id}/remote")
            row = page.locator(f"tr[data-session='{sid}']")
            await expect(row.locator("td.consent-by")).to_have_text("device user", timeout=15_000)
            await expect(row.locator("td.end-reason")).to_contain_text("(by technician)")
            await row.locator("a.play-recording").click()
            await expect(page.locator("#player-play")).to_be_enabled(timeout=15_000)
            await page.click("#player-play")
            await expect(page.locator("#player-status")).to_have_text("Played to the end.", timeout=15_000)
            frames = int(await page.get_attribute("#player-screen", "data-frames") or 0)
            assert frames > 0
            size = await page.evaluate("[document.querySelector('#player-screen').width,"
                                       " document.querySelector('#player-screen').height]")
            assert size == [xvfb.width, xvfb.height]
            assert _near(await _pixel(page), LATER_COLOUR)  # the end of the session
            # Scrubbing back to the start replays from the first screen: the colour before the change.
            await page.locator("#player-scrub").fill("0")
            await expect(page.locator("#player-time")).to_contain_text("0:00.0 /")
            await wait_until(lambda: _pixel_is(page, ROOT_COLOUR), timeout=10, what="the first screen again")
            await console.shot("player")
            assert console.csp_violations() == []
            assert not [e for e in console.errors if e.startswith("pageerror")]
        record = await wait_for_audit(server, "session.recording.view")
        assert record["actor"] == "root" and sid in str(record["details"])


async def _pixel(page) -> list[int]:  # type: ignore[no-untyped-def]
    return list(await page.evaluate("""() => Array.from(document.querySelector('#player-screen')
        .getContext('2d').getImageData(5, 700, 1, 1).data)"""))


async def _pixel_is(page, colour: tuple[int, int, int]) -> bool:  # type: ignore[no-untyped-def]
    return _near(await _pixel(page), colour)
