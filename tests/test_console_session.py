"""A full remote session from the console in Chromium against a real agent on Xvfb.

The technician asks for control on the device page; the consent prompt appears on the
device's display and is answered there with xdotool; the canvas then shows the device's
screen, and a click on the canvas moves the device's pointer. The technician writes notes under
the canvas while the session runs and after it ends; the device's session history shows them as text.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from playwright.async_api import expect

from agent.config import AgentConfig
from agent.consent.tk_app import ALLOW_BG
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_accounts_support import make_user
from tests.test_console_support import console_browser
from tests.test_session_helpers import click_canvas_until_pointer_moves, click_colour, configure_agent, wait_for_audit
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

ROOT_COLOUR = (0x33, 0x66, 0x99)
NOTES = "Printer queue cleared.\nTicket #1234 <script>window.__pwned = 1</script> <b>not bold</b>"


async def test_remote_control_session_from_the_console(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Ask for control in the console, Allow on the device, see its screen on the canvas, click to move its pointer."""
    subprocess.run(["xsetroot", "-display", xvfb.display, "-solid", "#" + bytes(ROOT_COLOUR).hex()], check=True,
                   timeout=10)
    async with running_server(tmp_path / "srv") as server:
        tech = await make_user(server, "tess", "technician", groups={"lab": None})
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            async with console_browser(server) as console:
                page = console.page
                await console.login(tech)
                await page.goto(f"{console.base}/#/devices/{state.device_id}")
                await page.click("#start-control")
                await page.fill("#session-reason", "ticket 42: printer setup")
                await page.click("#session-confirm")
                banner = page.locator("#consent-banner")
                await expect(banner).to_have_attribute("data-state", "offered", timeout=10_000)
                await expect(banner).to_contain_text("Waiting for the user")
                waiting_box = await page.locator(".viewer-bar").bounding_box()
                await click_colour(xvfb.display, ALLOW_BG, timeout=15)
                await expect(banner).to_have_attribute("data-mode", "control", timeout=15_000)
                await expect(banner).to_contain_text("User allowed CONTROL")

                async def canvas_shows_root() -> bool:
                    pixel = await page.evaluate("""() => { const c = document.querySelector('#screen');
                        if (c.width < 100) return null;
                        return Array.from(c.getContext('2d').getImageData(5, c.height - 5, 1, 1).data); }""")
                    return pixel is not None and all(abs(a - b) <= 12 for a, b in zip(pixel[:3], ROOT_COLOUR))

                await wait_until(canvas_shows_root, timeout=15, what="the device's screen on the canvas")
                assert await page.evaluate("[document.querySelector('#screen').width,"
                                           " document.querySelector('#screen').height]") == [xvfb.width, xvfb.height]
                # A click while the consent prompt is still closing is refused on the device (input waits while a
                # Helpline prompt is on screen): click again until one lands, within the deadline.
                await click_canvas_until_pointer_moves(xvfb.display, page, 0.25, 0.5)
                # The bar above the screen stays one line whatever it says: the screen never moved under the mouse.
                control_box = await page.locator(".viewer-bar").bounding_box()
                assert waiting_box is not None and control_box is not None
                assert control_box == waiting_box, (waiting_box, control_box)
                await expect(page.locator("#viewer-stats")).to_contain_text("fps · ")
                await expect(page.locator("#viewer-stats")).to_contain_text(f"{xvfb.width}×{xvfb.height}")
                await console.shot("viewer")
                session_id = page.url.rsplit("/", 1)[1]
                notes = page.locator("#session-notes")
                status = page.locator("#notes-status")
                await expect(notes).to_be_editable()
                await notes.fill(NOTES.split("\n")[0])
                await notes.press("Tab")  # leaving the box saves
                await expect(status).to_have_attribute("data-state", "saved", timeout=10_000)
                await page.click("#end-session")
                await expect(banner).to_have_attribute("data-state", "ended", timeout=10_000)
                await notes.fill(NOTES)  # after the end, still editable; Ctrl+S saves
                await expect(status).to_have_attribute("data-state", "dirty")
                await notes.press("Control+s")
                await expect(status).to_have_attribute("data-state", "saved", timeout=10_000)
                await expect(status).to_contain_text("Saved")

                await page.goto(f"{console.base}/#/devices/{state.device_id}/remote")
                cell = page.locator(f"tr[data-session='{session_id}'] td.session-notes")
                await expect(cell.locator("summary")).to_have_text("Printer queue cleared.…", timeout=15_000)
                await cell.locator("summary").click()
                shown = cell.locator("pre.notes-text")
                await expect(shown).to_be_visible()
                assert await shown.evaluate("e => e.textContent") == NOTES
                assert await cell.locator("script, b").count() == 0
                assert await page.evaluate("window.__pwned") is None
                await expect(cell.locator(".notes-by")).to_contain_text("— tess,")
                assert console.csp_violations() == []
                assert not [e for e in console.errors if e.startswith("pageerror")]
        record = await wait_for_audit(server, "session.notes.update")
        assert record["actor"] == "tess" and session_id in record["details"]
