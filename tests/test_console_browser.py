"""The console in Debian's Chromium (Playwright): login, device list and page, XSS, CSP, rights, origin checks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from pathlib import Path

import aiohttp
import pyotp
from playwright.async_api import expect

from tests.harness import console_url, enroll_agent, running_agent, running_server, wait_until
from tests.test_accounts_support import client, login, make_user, ssl_context
from tests.test_console_support import console_browser

HOSTILE = "<img src=x onerror=alert(1)>"
REPO = Path(__file__).resolve().parent.parent


async def _wait_inventory(server, device_id: str) -> None:  # type: ignore[no-untyped-def]
    async def has_inventory() -> bool:
        row = await server.db.fetchone("SELECT hostname FROM devices WHERE id = ?", (device_id,))
        return bool(row and row["hostname"])

    await wait_until(has_inventory, timeout=30, what="the agent's first inventory")


async def test_login_device_list_and_device_page_show_the_real_agent(tmp_path: Path) -> None:
    """Log in with password + TOTP; the enrolled agent is in the device list; its page shows its real inventory."""
    async with running_server(tmp_path / "srv") as server:
        admin = await make_user(server, "root", "admin")
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        async with running_agent(state) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            await _wait_inventory(server, state.device_id)
            row = await server.db.fetchone("SELECT hostname FROM devices WHERE id = ?", (state.device_id,))
            hostname = row["hostname"]
            async with console_browser(server) as console:
                page = console.page
                await page.goto(console.base + "/")
                await page.wait_for_selector("#login-submit")
                await console.shot("login")
                await console.login(admin)
                link = page.locator("#device-rows a.hostname", has_text=hostname)
                await link.wait_for(timeout=15_000)
                await console.shot("devices")
                await link.click()
                await page.wait_for_selector("#inv-identity dl", timeout=15_000)
                assert await page.text_content("#device-hostname") == hostname
                identity = await page.text_content("#inv-identity")
                assert hostname in identity and state.device_id in (await page.text_content(".summary"))
                await console.shot("device")
                await page.click("#tab-hardware")
                await page.wait_for_selector("#inv-cpu", timeout=10_000)
                await page.click("#tab-software")
                await page.wait_for_selector("#software-list table, #software-list .notice", timeout=10_000)
                # The health charts draw (uPlot, with the six hours pinned on the time axis) without an error.
                await page.click("#tab-health")
                await page.wait_for_selector("figure.chart .chart-plot canvas", timeout=15_000)
                assert console.csp_violations() == []
                assert not [e for e in console.errors if e.startswith("pageerror")]


async def test_hostile_hostname_renders_as_text_and_runs_nothing(tmp_path: Path) -> None:
    """A hostname of '<img src=x onerror=alert(1)>' shows as literal text in list and page; no dialog, no img."""
    async with running_server(tmp_path / "srv") as server:
        admin = await make_user(server, "root", "admin")
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        await server.db.execute("UPDATE devices SET hostname = ? WHERE id = ?", (HOSTILE, state.device_id))
        async with console_browser(server) as console:
            page = console.page
            await console.login(admin)
            cell = page.locator("#device-rows a.hostname").first
            await cell.wait_for(timeout=15_000)
            assert await cell.text_content() == HOSTILE
            await cell.click()
            await page.wait_for_selector("#device-hostname")
            assert await page.text_content("#device-hostname") == HOSTILE
            assert await page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
            await page.wait_for_timeout(300)  # give a (wrongly) injected onerror handler the chance to fire
            assert console.dialogs == []


async def _raw_get(server, target: str) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    """Send ``GET target`` byte for byte over TLS (an HTTP client would normalise ``..`` away); status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.console_port, ssl=ssl_context(server),
                                                   server_hostname="localhost")
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: localhost:{server.console_port}\r\nConnection: close\r\n"
                     "\r\n".encode("ascii"))
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 10)  # Connection: close — read to EOF
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    assert status_line[:1] == [b"HTTP/1.1"], reply[:200]
    return int(status_line[1]), body


async def _static_traversal_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    """``..`` in a static path, raw or percent-encoded, must not reach files outside console/static."""
    secret = (REPO / "server" / "app.py").read_bytes()
    # Control: the raw request reaches the static handler and is answered with the file.
    status, body = await _raw_get(server, "/static/app.css")
    assert status == 200 and body == (REPO / "console" / "static" / "app.css").read_bytes()
    for target in ("/static/../../server/app.py", "/static/%2e%2e/%2e%2e/server/app.py",
                   "/static/%2E%2E/%2E%2E/server/app.py", "/static/.%2e/.%2e/server/app.py",
                   "/static/..%2f..%2fserver/app.py", "/static/%2e%2e%2f%2e%2e%2fserver%2fapp.py",
                   "/static/js/../../../server/app.py"):
        status, body = await _raw_get(server, target)
        assert status in (403, 404), (target, status)
        assert b"HelplineServer" not in body and secret[:200] not in body, target


async def test_csp_blocks_injected_inline_script_and_headers_are_strict(tmp_path: Path) -> None:
    """Responses carry a strict CSP (no inline script, no framing) and Chromium refuses an injected inline script."""
    async with running_server(tmp_path / "srv") as server:
        async with client(server) as http:
            async with http.get("/") as resp:
                csp = resp.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert resp.headers["Referrer-Policy"] == "no-referrer"
            async with http.get("/api/v1/auth/me") as resp:
                assert resp.status == 401 and "default-src 'self'" in resp.headers["Content-Security-Policy"]
        await _static_traversal_is_refused(server)
        async with console_browser(server) as console:
            page = console.page
            await page.goto(console.base + "/")
            await page.wait_for_selector("#login-submit")
            ran = await page.evaluate("""() => { const s = document.createElement('script');
                s.textContent = 'window.__pwned = 1'; document.body.append(s); return window.__pwned === 1; }""")
            assert ran is False
            assert console.csp_violations()


async def test_foreign_origin_websocket_is_refused(tmp_path: Path) -> None:
    """A session-stream websocket with a foreign Origin is refused (403) even with a valid login cookie."""
    async with running_server(tmp_path / "srv") as server:
        tech = await make_user(server, "tess", "technician", groups={"lab": None})
        async with client(server) as http:
            assert (await login(http, tech)).status == 200
            url = f"wss://localhost:{server.console_port}/api/v1/sessions/nope/stream"
            try:
                await http.ws_connect(url, origin="https://evil.example")
                raise AssertionError("foreign-origin websocket was accepted")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 403
            try:
                await http.ws_connect(url, origin=console_url(server))
                raise AssertionError("unknown session accepted")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 404  # own origin passes the check and reaches the session lookup


async def test_viewer_role_cannot_start_a_session(tmp_path: Path) -> None:
    """A viewer-role account sees the device page without session buttons, and the API refuses it with 403."""
    async with running_server(tmp_path / "srv") as server:
        viewer = await make_user(server, "vera", "viewer", groups={"lab": None})
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        async with client(server) as http:
            result = await login(http, viewer)
            async with http.post(f"/api/v1/devices/{state.device_id}/sessions", json={"mode": "view", "reason": "x"},
                                 headers={"X-CSRF-Token": result.csrf}) as resp:
                assert resp.status == 403
        async with console_browser(server) as console:
            page = console.page
            await console.login(viewer, code=viewer.code(1))
            await page.goto(f"{console.base}/#/devices/{state.device_id}")
            await page.wait_for_selector("#device-actions", timeout=15_000)
            assert await page.locator("#start-view").count() == 0
            assert await page.locator("#start-control").count() == 0
            assert "may not open remote sessions" in (await page.text_content("#device-actions"))
            await console.shot("device-viewer-role")


async def test_lockout_shown_in_the_login_form(tmp_path: Path) -> None:
    """After repeated wrong passwords in the form, even the right credentials are refused with a lockout message."""
    async with running_server(tmp_path / "srv") as server:
        acct = await make_user(server, "lou", "viewer")
        async with console_browser(server) as console:
            page = console.page
            await page.goto(console.base + "/#/login")
            await page.fill("#username", "lou")
            for _ in range(5):
                await page.fill("#password", "wrong-password")
                await page.fill("#totp", "000000")
                await page.click("#login-submit")
                await expect(page.locator("#login-error")).to_have_text("wrong username, password or code")
                await expect(page.locator("#login-submit")).to_be_enabled()
                await page.evaluate("document.querySelector('#login-error').textContent = ''")
            await page.fill("#password", acct.password)
            await page.fill("#totp", acct.code())
            await page.click("#login-submit")
            await expect(page.locator("#login-error")).to_contain_text("locked")
            assert await page.locator("#topbar[hidden]").count() == 1




async def test_admin_pages_and_a_10k_device_list(tmp_path: Path) -> None:
    """Users (create shows a one-time password), audit (filter, verify), signed documents pages work; 10,000 devices
    page fast."""
    import time

    from server import devices

    async with running_server(tmp_path / "srv") as server:
        admin = await make_user(server, "root", "admin")
        await devices.ensure_group(server.db, "lab")
        now = time.time()
        await server.db.executemany(
            "INSERT INTO devices (id, group_name, hostname, cert_serial, cert_not_after, enrolled_at, last_seen, online)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(f"dev-{i:05d}", "lab", f"ws-{i:05d}", f"s{i}", now + 86400, now, now - i, i % 3 == 0)
             for i in range(10_000)])
        async with console_browser(server) as console:
            page = console.page
            await console.login(admin)
            await expect(page.locator("#device-total")).to_have_text("10000 devices", timeout=15_000)
            started = time.monotonic()
            await page.click("th.col-last_seen button")
            await expect(page.locator("#device-rows tr").first).to_contain_text("ws-00000")
            await page.keyboard.press("/")
            await page.keyboard.type("ws-0999")
            await expect(page.locator("#device-total")).to_have_text("10 devices")
            elapsed = time.monotonic() - started
            print(f"10k devices: sort + search answered in {elapsed * 1000:.0f} ms")
            assert elapsed < 5.0
            await page.keyboard.press("Escape")
            await page.goto(console.base + "/#/users")
            await page.fill("#new-username", "newbie")
            await page.click("#users-list ~ form button, form.card.inline button[type=submit]")
            await expect(page.locator("#new-user-secret")).to_contain_text("shown once")
            await expect(page.locator("tr[data-user=newbie]")).to_contain_text("no TOTP yet")
            await console.shot("users")
            newbie_password = await page.text_content("#new-user-secret code")
            await page.goto(console.base + "/#/audit")
            await expect(page.locator("#audit-rows")).to_contain_text("user.create")
            await page.click("#audit-verify")
            await expect(page.locator("#audit-verdict")).to_contain_text("Chain intact")
            await console.shot("audit")
            from server.authority import repository as documents
            from tests.authority_helpers import make_org

            await documents.create_document(server.db, make_org().grant("grant-overnight-1", signers=("alice",)),
                                            actor="user:root")
            await page.goto(console.base + "/#/grants")
            row = page.locator("#documents-list tr[data-document=grant-overnight-1]")
            await expect(row).to_contain_text("group lab")
            await expect(row).to_contain_text("open")  # the server relays no root: it cannot tell approved
            await expect(row).to_contain_text("0 / 2")
            await console.shot("grants")
            await page.click("#whoami button:has-text('Log out')")
            await page.fill("#username", "newbie")
            await page.fill("#password", newbie_password)
            await page.click("#login-submit")
            await expect(page.locator("#totp-qr")).to_be_visible()
            secret = await page.text_content("#totp-secret")
            await console.shot("totp-enrollment")
            await page.fill("#totp", pyotp.TOTP(secret).now())
            await page.click("#login-submit")
            await page.fill("#new-password", "newbie-own-passphrase")  # the generated one is replaced first
            await page.fill("#new-password-repeat", "newbie-own-passphrase")
            await page.click("#password-change-submit")
            await expect(page.locator("#whoami")).to_contain_text("newbie")
            assert console.csp_violations() == []
            assert not [e for e in console.errors if e.startswith("pageerror")]


async def test_the_menu_fits_groups_pages_by_rights_and_folds_away(tmp_path: Path) -> None:
    """Every page an admin may open is in the sidebar, all visible at 1360×860 with the account menu on screen (the
    old top-bar row wrapped over itself and pushed it off); a viewer gets no Automation or Administration heading;
    ☰ folds the menu, the page gets the width, and the choice survives a reload."""
    async with running_server(tmp_path / "srv") as server:
        admin = await make_user(server, "root", "admin")
        viewer = await make_user(server, "vera", "viewer", groups={"lab": None})
        async with console_browser(server) as console:
            page = console.page
            await console.login(admin)
            nav = page.locator("#nav")
            await expect(nav.locator("a[href='#/users']")).to_be_visible()
            headings = await nav.locator(".nav-heading").all_text_contents()
            assert headings == ["Help desk", "Fleet", "Automation", "Administration"]
            links = nav.locator("a")
            assert await links.count() == 15
            boxes = [await links.nth(i).bounding_box() for i in range(await links.count())]
            assert all(b is not None and b["y"] + b["height"] <= 860 for b in boxes), boxes
            tops = sorted(b["y"] for b in boxes if b is not None)
            assert all(b - a >= 20 for a, b in itertools.pairwise(tops)), "menu links overlap"
            me = await page.locator("#my-account").bounding_box()
            assert me is not None and me["x"] + me["width"] <= 1360
            main = page.locator("#main")
            width_open = (await main.bounding_box() or {"width": 0})["width"]
            await page.click("#nav-toggle")
            await expect(page.locator("#sidebar")).to_be_hidden()
            assert await page.get_attribute("#nav-toggle", "aria-expanded") == "false"
            assert (await main.bounding_box() or {"width": 0})["width"] > width_open + 150
            await page.reload()
            await page.wait_for_selector("#topbar:not([hidden])", timeout=15_000)
            await expect(page.locator("#sidebar")).to_be_hidden()
            await page.click("#nav-toggle")
            await expect(page.locator("#sidebar")).to_be_visible()
        async with console_browser(server) as console:
            await console.login(viewer, code=viewer.code(1))
            nav = console.page.locator("#nav")
            await expect(nav.locator("a[href='#/devices']")).to_be_visible()
            assert await nav.locator(".nav-heading").all_text_contents() == ["Help desk", "Fleet"]
            assert await nav.locator("a[href='#/users'], a[href='#/tasks'], a[href='#/audit']").count() == 0
        assert console.csp_violations() == []
