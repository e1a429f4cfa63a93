"""The device page's Processes and Services tabs in Chromium (issue 16): a process started by the test appears
(live list, filter), is ended from the console inside the technician's consented control session (two clicks),
audited; the Services tab says "not available: systemd is not running (PID 1 is …)"; a viewer-role account
gets no End buttons."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
from playwright.async_api import expect

from agent.consent.scripted import ScriptedConsentUI
from agent.viewer import Viewer
from server.accounts import admin
from tests.harness import console_url, enroll_agent, running_agent, running_server, wait_until
from tests.test_accounts_support import make_user, ssl_context
from tests.test_console_support import console_browser
from tests.test_session_helpers import configure_agent
from tests.test_tools_e2e import MARKER, call, sleeper
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


async def test_console_lists_and_ends_a_process_and_says_services_are_not_available(
        tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Listed, filtered, sorted, ended with two clicks in the technician's control session (audited once); the
    Services tab's not-available text; a viewer-role account sees the refusal and no End button."""
    async with running_server(tmp_path / "srv") as server:
        tess = await make_user(server, "tess", "technician", groups={"lab": None})
        vic = await make_user(server, "vic", "viewer", groups={"lab": None})
        token = (await admin.create_token(server.db, "tess", "t", None, actor="test")).token
        state = await enroll_agent(server, tmp_path / "a", group="lab")
        ui = ScriptedConsentUI([True])
        async with running_agent(state, setup=configure_agent(xvfb.display, ui)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 30)
            device = state.device_id
            status, body = await call(server, token, "POST", f"/api/v1/devices/{device}/sessions",
                                      {"mode": "control"})
            assert status == 201, body
            sid = body["session_id"]
            viewer = Viewer(f"wss://localhost:{server.console_port}/api/v1/sessions/{sid}/stream",
                            ssl_context=ssl_context(server),
                            headers={"Origin": console_url(server), "Authorization": f"Bearer {token}"})
            with sleeper() as proc:
                async with viewer:
                    await viewer.wait_for_updates(1, 30)
                    async with console_browser(server) as console:
                        page = console.page
                        await console.login(tess, code=tess.code(1))
                        await page.goto(f"{console.base}/#/devices/{device}/processes")
                        row = page.locator(f"#process-rows tr[data-pid='{proc.pid}']")
                        await expect(row).to_have_count(1, timeout=20_000)
                        await expect(row.locator("td.cmdline")).to_contain_text(MARKER)
                        await page.fill("#process-filter", MARKER)
                        await expect(page.locator("#process-rows tr")).to_have_count(1)
                        await page.click("#processes th[data-sort=pid]")  # sortable headers keep the row
                        await expect(row).to_have_count(1)
                        await page.fill("#process-filter", "")
                        await console.shot("device-processes")
                        await page.fill("#process-filter", MARKER)
                        await row.locator("button.end-process").click()
                        await expect(row.locator("button.end-process")).to_have_text("Confirm end")
                        assert proc.poll() is None  # one click only arms the button
                        await row.locator("button.end-process").click()
                        await expect(page.locator(".toast").last).to_contain_text("ended by SIGTERM",
                                                                                  timeout=20_000)
                        await wait_until(lambda: not psutil.pid_exists(proc.pid) or proc.poll() is not None,
                                         timeout=10, what="process ended")
                        await expect(row).to_have_count(0, timeout=10_000)

                        await page.goto(f"{console.base}/#/devices/{device}/services")
                        await expect(page.locator("#services-unavailable")).to_have_text(
                            f"not available: systemd is not running (PID 1 is {psutil.Process(1).name()})",
                            timeout=20_000)
                        assert console.csp_violations() == []
                        assert not [e for e in console.errors if e.startswith("pageerror")]
            rows = await server.db.fetchall("SELECT actor FROM audit_log WHERE action = ?", ("device.process.end",))
            assert [r["actor"] for r in rows] == ["user:tess"]

            async with console_browser(server) as console:
                await console.login(vic, code=vic.code(1))
                await console.page.goto(f"{console.base}/#/devices/{device}/processes")
                await expect(console.page.locator("#device-panel")).to_contain_text("remote_view", timeout=20_000)
                assert await console.page.locator("button.end-process").count() == 0
