"""Support codes from the console in Chromium: create a code, download the bundle, connect the waiting client.

A real ``helpline support`` process on Xvfb redeems the code the page showed once; the technician
clicks Connect on the waiting client, the consent prompt on the Xvfb display is answered with
xdotool, and the normal viewer's canvas shows the unenrolled machine's screen.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from playwright.async_api import expect

from agent.consent.tk_app import ALLOW_BG
from agent.support_client.bundle import load_bundle
from tests.harness import running_server, wait_until
from tests.procs import spawn
from tests.test_accounts_support import make_user
from tests.test_console_support import console_browser
from tests.test_session_helpers import click_colour
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

ROOT_COLOUR = (0x66, 0x33, 0x99)


async def test_support_code_from_the_console(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Create → code shown once → bundle → client waits → Connect → Allow → the canvas shows its screen."""
    subprocess.run(["xsetroot", "-display", xvfb.display, "-solid", "#" + bytes(ROOT_COLOUR).hex()], check=True,
                   timeout=10)
    async with running_server(tmp_path / "srv") as server:
        tech = await make_user(server, "tess", "technician", groups={"lab": None})
        async with console_browser(server) as console:
            page = console.page
            await console.login(tech)
            await page.click("nav a[href='#/support']")
            await expect(page.locator("#support-group")).to_have_value("lab")
            await page.fill("#support-reason", "contractor laptop, ticket 77")
            await page.click("#support-create")
            shown = page.locator("#support-code")
            await expect(shown).to_have_text(re.compile(r"^\d{3} \d{3} \d{3} \d{3}$"), timeout=10_000)
            code = (await shown.text_content() or "").strip()
            await expect(page.locator("tr[data-code] td").nth(5)).to_have_text("live")
            async with page.expect_download() as download_info:
                await page.click("#support-bundle")
            download = await download_info.value
            assert download.suggested_filename == "helpline-support.toml"
            bundle_path = tmp_path / "helpline-support.toml"
            await download.save_as(bundle_path)
            assert load_bundle(bundle_path).port == server.console_port
            await console.shot("support-code")
            with spawn("support", "--bundle", str(bundle_path), code, "--display", xvfb.display,
                       log=tmp_path / "client.log") as proc:
                connect = page.locator("tr.waiting button.support-connect")
                await expect(connect).to_be_visible(timeout=30_000)
                await expect(page.locator("tr[data-code] td").nth(5)).to_have_text("used")
                await connect.click()
                await expect(page).to_have_url(re.compile(r"#/sessions/s-"), timeout=10_000)
                await click_colour(xvfb.display, ALLOW_BG, timeout=30)

                async def canvas_shows_root() -> bool:
                    pixel = await page.evaluate("""() => { const c = document.querySelector('#screen');
                        if (!c || c.width < 100) return null;
                        return Array.from(c.getContext('2d').getImageData(5, c.height - 5, 1, 1).data); }""")
                    return pixel is not None and all(abs(a - b) <= 12 for a, b in zip(pixel[:3], ROOT_COLOUR))

                await wait_until(canvas_shows_root, timeout=30, what="the support client's screen on the canvas")
                await console.shot("support-code-session")
                await page.click("#end-session")
                await wait_until(lambda: proc.poll() is not None, timeout=30, what="the support client to exit")
                assert proc.returncode == 0, (tmp_path / "client.log").read_text()
            await page.goto(f"{console.base}/#/support")
            await expect(page.locator("tr[data-client] td").nth(0)).not_to_be_empty(timeout=10_000)
            assert code not in await page.content()  # shown once, never listed
            assert console.csp_violations() == []
            assert not [e for e in console.errors if e.startswith("pageerror")]
