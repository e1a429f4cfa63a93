"""Helpers for the browser tests (no tests here): Chromium pinned to our server key, UI login, screenshots."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from server.app import HelplineServer
from tests.harness import console_url
from tests.test_accounts_support import Account

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
BASE_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]


def spki_pin(server: HelplineServer) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the console's certificate: the one key Chromium will accept."""
    cert = x509.load_pem_x509_certificate(server.pki.server_pem.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@dataclass
class Console:
    browser: Browser
    context: BrowserContext
    page: Page
    base: str
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    async def login(self, account: Account, *, code: str | None = None) -> None:
        page = self.page
        await page.goto(self.base + "/#/login")
        await page.fill("#username", account.username)
        await page.fill("#password", account.password)
        await page.fill("#totp", account.code() if code is None else code)
        await page.click("#login-submit")
        await page.wait_for_selector("#topbar:not([hidden])", timeout=15_000)

    async def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))

    def csp_violations(self) -> list[str]:
        return [e for e in self.errors if "Content Security Policy" in e or "Refused to" in e]


@contextlib.asynccontextmanager
async def console_browser(server: HelplineServer, *, width: int = 1360, height: int = 860) -> AsyncIterator[Console]:
    """Chromium (Debian's) trusting exactly our server key; certificate errors are NOT ignored otherwise."""
    if not os.path.exists(CHROMIUM):
        raise AssertionError(f"{CHROMIUM} is missing: apt-get install chromium (browser tests never skip)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=[*BASE_ARGS, f"--ignore-certificate-errors-spki-list={spki_pin(server)}"])
        try:
            context = await browser.new_context(ignore_https_errors=False, viewport={"width": width, "height": height})
            page = await context.new_page()
            console = Console(browser, context, page, console_url(server))
            page.on("console", lambda m: console.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console.errors.append(f"pageerror: {e}"))

            async def on_dialog(dialog) -> None:  # type: ignore[no-untyped-def]
                console.dialogs.append(dialog.message)
                await dialog.dismiss()

            page.on("dialog", on_dialog)
            yield console
        finally:
            await browser.close()
