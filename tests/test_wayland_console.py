"""The console shows which capture backend a session uses (Chromium, real server and agent, headless Mutter)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import expect

from agent.config import AgentConfig
from tests.harness import enroll_agent, running_agent, running_server
from tests.test_accounts_support import make_user
from tests.test_console_support import console_browser
from tests.test_session_helpers import configure_agent
from tests.test_wayland import TIMEOUT, wayland  # noqa: F401 - fixture
from tests.wayland import MutterHandle, answer_xwayland_prompt


async def test_console_status_line_names_the_wayland_backend(tmp_path: Path, wayland: MutterHandle) -> None:  # noqa: F811
    """An attended control session on GNOME/Wayland: the viewer's status line says wayland-mutter."""
    async with running_server(tmp_path / "srv") as server:
        tech = await make_user(server, "tess", "technician", groups={"lab": None})
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0)
        # The session's own XWayland display: the agent picks Wayland from the session (XDG_SESSION_TYPE).
        async with running_agent(state, config, setup=configure_agent(wayland.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            async with console_browser(server) as console:
                page = console.page
                await console.login(tech)
                await page.goto(f"{console.base}/#/devices/{state.device_id}")
                await page.click("#start-control")
                await page.fill("#session-reason", "backend check")
                await page.click("#session-confirm")
                await answer_xwayland_prompt(wayland, TIMEOUT)
                await expect(page.locator("#consent-banner")).to_have_attribute("data-mode", "control",
                                                                                 timeout=30_000)
                await expect(page.locator("#viewer-stats")).to_contain_text("wayland-mutter", timeout=30_000)
                # The page's only error is the 401 of the session probe before login; nothing from the viewer.
                assert [e for e in console.errors if "401" not in e] == [], console.errors
