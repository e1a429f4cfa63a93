"""The console draws the device's real cursor shape over the remote screen (Chromium, real agent on Xvfb)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from playwright.async_api import expect

from agent.config import AgentConfig
from agent.consent.tk_app import ALLOW_BG
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_accounts_support import make_user
from tests.test_console_support import console_browser
from tests.test_session_helpers import click_colour, configure_agent
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


async def test_console_draws_received_cursor_shape_at_the_pointer(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """After a click moves the device pointer, the cursor sprite has the agent's shape and its hotspot sits there."""
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
                await page.fill("#session-reason", "cursor check")
                await page.click("#session-confirm")
                await click_colour(xvfb.display, ALLOW_BG, timeout=15)
                banner = page.locator("#consent-banner")
                await expect(banner).to_have_attribute("data-mode", "control", timeout=15_000)
                sprite = page.locator("#remote-cursor")
                await expect(sprite).to_have_attribute("data-shapes", re.compile(r"^[1-9]"), timeout=15_000)
                box = await page.locator("#screen").bounding_box()
                assert box is not None
                target = (box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5)
                await page.mouse.click(*target)
                scale = box["width"] / xvfb.width

                async def hotspot_on_target() -> bool:
                    state = await page.evaluate("""() => { const s = document.querySelector('#remote-cursor');
                        const r = s.getBoundingClientRect();
                        return [s.hidden, s.dataset.shape, s.width, s.height, r.x, r.y, r.width]; }""")
                    hidden, shape, cw, ch, sx, sy, sw = state
                    size, hot = shape.split("@")
                    w, h = (int(v) for v in size.split("x"))
                    hot_x, hot_y = (int(v) for v in hot.split(","))
                    tolerance = 3 * max(scale, 1)
                    return bool(
                        not hidden and (cw, ch) == (w, h) and abs(sw - w * scale) < 1
                        and abs(sx + hot_x * scale - target[0]) <= tolerance
                        and abs(sy + hot_y * scale - target[1]) <= tolerance
                    )

                await wait_until(hotspot_on_target, timeout=10, what="cursor sprite hotspot at the clicked point")
                assert console.csp_violations() == []
