"""The console's first-login password change (Chromium): a generated password leads from the login form to the
change form (no navigation until done), also after a reload; the new password then works and the old does not."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import expect

from server.accounts import admin
from tests.harness import running_server
from tests.test_accounts_support import Account, client, login
from tests.test_console_support import console_browser

NEW = "correct-horse-battery"


async def test_generated_password_is_changed_in_the_console_before_anything_else(tmp_path: Path) -> None:
    """Login with a generated password shows the change form instead of the console; a too-short or mismatched
    password is refused in place; after a reload the form asks for the current password too; the change opens the
    console, and the new password logs in while the old one is refused."""
    async with running_server(tmp_path / "srv") as server:
        created = await admin.create_account(server.db, "nina", "technician", actor="test")
        nina = Account("nina", created.password, created.totp_secret, created.user.id)
        async with console_browser(server) as console:
            page = console.page
            await page.goto(console.base + "/#/login")
            await page.fill("#username", "nina")
            await page.fill("#password", nina.password)
            await page.fill("#totp", nina.code())
            await page.click("#login-submit")
            form = page.locator("#password-change")
            await expect(form).to_be_visible(timeout=15_000)
            await expect(page.locator("#topbar")).to_be_hidden()
            await expect(page.locator("#current-password")).to_be_hidden()  # just typed at the login form
            await page.fill("#new-password", "too-short")
            await page.fill("#new-password-repeat", "too-short")
            await page.click("#password-change-submit")
            await expect(page.locator("#password-change-error")).to_contain_text("12")
            await page.fill("#new-password", NEW)
            await page.fill("#new-password-repeat", NEW + "x")
            await page.click("#password-change-submit")
            await expect(page.locator("#password-change-error")).to_contain_text("do not match")

            await page.goto(console.base + "/#/devices")
            await page.reload()
            await expect(form).to_be_visible(timeout=15_000)
            await expect(page.locator("#topbar")).to_be_hidden()
            await page.fill("#current-password", nina.password)
            await page.fill("#new-password", NEW)
            await page.fill("#new-password-repeat", NEW)
            await console.shot("password-change")
            await page.click("#password-change-submit")
            await expect(page.locator("#whoami")).to_contain_text("nina", timeout=15_000)
            await expect(form).to_have_count(0)
            assert console.csp_violations() == []
            assert not [e for e in console.errors if e.startswith("pageerror")]
        row = await server.db.fetchone("SELECT must_change_password FROM users WHERE id = ?", (nina.user_id,))
        assert row == {"must_change_password": 0}
        async with client(server) as http:
            assert (await login(http, nina, code=nina.code(1))).status == 401
            assert (await login(http, nina, code=nina.code(1), password=NEW)).status == 200
