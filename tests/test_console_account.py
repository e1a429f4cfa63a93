"""My account in the console (Chromium): API tokens shown once, usable as Bearer, revoked → 401; own
console sessions listed and revocable."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.async_api import expect

from tests.harness import running_server
from tests.test_accounts_support import client, login, make_user
from tests.test_console_support import console_browser


async def _me_status(server, headers: dict[str, str]) -> int:  # type: ignore[no-untyped-def]
    async with client(server, **headers) as http, http.get("/api/v1/auth/me") as resp:
        return resp.status


async def test_token_is_shown_once_works_as_bearer_and_stops_when_revoked(tmp_path: Path) -> None:
    """A token made on My account is shown once, answers /auth/me as Bearer, and gets 401 after Revoke."""
    async with running_server(tmp_path / "srv") as server:
        tess = await make_user(server, "tess", "technician", groups={"lab": None})
        async with console_browser(server) as console:
            page = console.page
            await console.login(tess)
            await page.click("#my-account")
            await page.fill("#token-name", "nightly report")
            await page.click("#token-create")
            value = page.locator("#new-token-value")
            await expect(value).to_have_text(re.compile(r"^hl_\S{20,}$"), timeout=10_000)
            token = (await value.text_content()) or ""
            row = page.locator("tr[data-name='nightly report']")
            await expect(row).to_contain_text("active")
            await console.shot("account")
            bearer = {"Authorization": f"Bearer {token}"}
            assert await _me_status(server, bearer) == 200
            async with client(server, **bearer) as http, http.get("/api/v1/auth/me") as resp:
                assert (await resp.json())["user"]["username"] == "tess"

            await page.goto(f"{console.base}/#/devices")
            await page.goto(f"{console.base}/#/account")
            await expect(row).to_be_visible(timeout=10_000)
            assert await page.locator("#new-token-value").count() == 0
            assert token not in (await page.content())  # never shown again

            await row.locator("button.token-revoke").click()
            await expect(row).to_contain_text("revoked")
            assert await _me_status(server, bearer) == 401
            assert console.csp_violations() == []


async def test_own_console_session_is_listed_and_revoked(tmp_path: Path) -> None:
    """Another login of mine shows up on My account; Revoke ends it (its cookie gets 401), mine stays."""
    async with running_server(tmp_path / "srv") as server:
        tess = await make_user(server, "tess", "technician", groups={"lab": None})
        async with client(server) as other:
            assert (await login(other, tess)).status == 200
            async with console_browser(server) as console:
                page = console.page
                await console.login(tess, code=tess.code(1))
                await page.goto(f"{console.base}/#/account")
                rows = page.locator("#my-sessions tr[data-console-session]")
                await expect(rows).to_have_count(2, timeout=10_000)
                await expect(page.locator("#my-sessions")).to_contain_text("this session")
                await page.locator("#my-sessions button.danger").click()
                await expect(rows).to_have_count(1)
                async with other.get("/api/v1/auth/me") as resp:
                    assert resp.status == 401
                await page.reload()
                await expect(page.locator("#my-sessions")).to_contain_text("this session", timeout=10_000)
