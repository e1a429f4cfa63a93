"""The personal-data page in the console (Chromium, real server and agent, issue 17): an admin stops collecting
local accounts and login history for a group and the connected agent's next report leaves them out; the
retention is saved; a group admin switches their own group only; a viewer sees the settings read-only."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

from playwright.async_api import expect

from agent.config import AgentConfig
from server.app import HelplineServer
from server.auth.rights import Right
from server.cmdb import inventory_store, settings
from tests.harness import RunningAgent, enroll_agent, running_agent, running_server, wait_until
from tests.test_accounts_support import make_user
from tests.test_console_support import console_browser


async def test_personal_data_page_switches_a_group_and_the_agent_follows(tmp_path: Path) -> None:
    """Stop collecting in the page: the row says so, the live agent's acknowledged inventory has no accounts
    or logins; collect again brings them back; retention saved; viewers get no controls."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent")
        admin = await make_user(server, "root", "admin", groups={"*": None})
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=0.5, health_interval_s=3600.0,
                             inventory_interval_s=3600.0)

        async def held() -> set[str]:
            return set(await inventory_store.get_inventory(server.db, state.device_id)) & {"accounts", "logins"}

        async with running_agent(state, config) as agent:
            await wait_until(lambda: _equals(held(), {"accounts", "logins"}), timeout=120, what="personal data stored")
            async with console_browser(server) as console:
                page = console.page
                await console.login(admin)
                await page.goto(f"{console.base}/#/personal-data")
                row = page.locator("#personal-groups tr[data-group='default']")
                await expect(row.locator(".state")).to_have_text("collected")
                await row.locator("button.switch").click()
                await expect(row.locator(".state")).to_have_text("not collected")
                assert await held() == set()
                await wait_until(lambda: _acked_without(agent), timeout=60,
                                 what="the agent's report without accounts/logins")

                await page.fill("#retention-days", "14")
                await page.click("#retention-save")
                await expect(page.locator("#retention-days")).to_have_value("14")
                await wait_until(lambda: _retention(server, 14), timeout=10, what="retention stored")

                await row.locator("button.switch").click()
                await expect(row.locator(".state")).to_have_text("collected")
                await wait_until(lambda: _equals(held(), {"accounts", "logins"}), timeout=60,
                                 what="personal data back")
                stored = await inventory_store.get_inventory(server.db, state.device_id)
                assert stored["logins"]["retention_days"] == 14
                assert agent.client.connections == 1
                assert not console.csp_violations(), console.errors
                assert not [e for e in console.errors if "pageerror" in e], console.errors

        lab_admin = await make_user(server, "labby", "technician",
                                    groups={"lab": Right.ADMINISTER | Right.VIEW_INVENTORY,
                                            "default": Right.VIEW_INVENTORY})
        viewer = await make_user(server, "vic", "viewer", groups={"lab": Right.VIEW_INVENTORY})
        async with console_browser(server) as console:
            page = console.page
            await console.login(lab_admin)
            await page.goto(f"{console.base}/#/personal-data")
            await expect(page.locator("#personal-groups tbody tr")).to_have_count(2)
            await expect(page.locator("#personal-groups tr[data-group='default'] button.switch")).to_have_count(0)
            await expect(page.locator("#retention-save")).to_have_count(0)
            await page.locator("#personal-groups tr[data-group='lab'] button.switch").click()
            await expect(page.locator("#personal-groups tr[data-group='lab'] .state")).to_have_text("not collected")
            assert not await settings.collects_personal_data(server.db, "lab")
        async with console_browser(server) as console:
            page = console.page
            await console.login(viewer)
            await page.goto(f"{console.base}/#/personal-data")
            await expect(page.locator("#personal-groups tbody tr")).to_have_count(1)
            await expect(page.locator("#personal-groups tr[data-group='lab'] .state")).to_have_text("not collected")
            await expect(page.locator("button.switch, #retention-save")).to_have_count(0)
            await expect(page.locator("#retention-days")).to_be_disabled()


async def _equals(value: Awaitable[set[str]], expected: set[str]) -> bool:
    return await value == expected


def _acked_without(agent: RunningAgent) -> bool:
    acked = agent.reporter.load_acked()
    return acked is not None and not {"accounts", "logins"} & set(acked.checksums)


async def _retention(server: HelplineServer, days: int) -> bool:
    return bool((await settings.personal_data(server.db))["login_retention_days"] == days)
