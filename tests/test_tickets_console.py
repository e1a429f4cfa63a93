"""The Tickets page in Chromium (real server, ServiceNow fake over TLS): an admin adds a connector (the secret goes
in, only "set" comes back), creates an incident from a request, sees the session's failed write-back with the
remote's error, retries it, and sees it sent."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.async_api import expect

from server.tickets import TICKETS
from tests import tickets_fakes
from tests.conftest import add_device
from tests.harness import running_server, wait_until
from tests.test_accounts_support import make_user
from tests.test_console_support import console_browser
from tests.test_session_helpers import api, install_test_auth
from tests.test_tickets_writeback import add_request, fast, run_session, session_tickets
from tests.tickets_fakes import Scripted


async def test_tickets_page_connector_ticket_and_failed_writeback(tmp_path: Path) -> None:
    """Add a ServiceNow connector in the form; Create ticket for a request; the ended session's failed write-back
    is shown (Show, and the admin's list) with ServiceNow's error; Retry sends it once."""
    async with running_server(tmp_path / "srv") as server, tickets_fakes.servicenow(tmp_path / "sn") as sn:
        install_test_auth(server)
        fast(server, max_attempts=2)
        device = await add_device(server.db, "dev-console", "lab")
        request_id = await add_request(server, device, urgency="normal")
        admin = await make_user(server, "admin1", "admin", groups={"*": None})
        async with console_browser(server) as console:
            page = console.page
            await console.login(admin)
            await page.goto(f"{console.base}/#/tickets")
            await page.click("#connector-new")
            await page.fill("#connector-name", "ServiceNow prod")
            await page.select_option("#connector-kind", "servicenow")
            await page.fill("#connector-url", sn.url)
            await page.fill("#connector-username", sn.user)
            await page.fill("#connector-secret", sn.secret)
            await page.fill("#connector-ca", sn.ca_pem)
            await page.click("#connector-save")
            row = page.locator("#connectors tbody tr")
            await expect(row).to_have_count(1)
            await expect(row.locator(".secret")).to_have_text("set")
            assert sn.secret not in await page.content()

            await page.select_option("#link-what", "requests")
            await page.fill("#link-id", request_id)
            await page.click("#link-create")
            await expect(page.locator("#linked-tickets tbody tr")).to_have_count(1)
            (incident,) = sn.incidents.values()
            await expect(page.locator("#linked-tickets")).to_contain_text(incident["number"])
            assert (incident["impact"], incident["urgency"]) == ("2", "2")

            sid = await run_session(server, device, request_id, ["hello", "it works now"])
            sn.script += [Scripted("PATCH /api/now/table/incident/", 503, tickets_fakes.SN_BUSY) for _ in range(2)]
            assert (await api(server, "POST", f"/api/v1/sessions/{sid}/end", "ann"))[0] == 200

            async def failed() -> bool:
                return bool((await session_tickets(server, sid))["writeback_failed"])

            await wait_until(failed, timeout=30, what="the write-back to fail")
            await page.select_option("#link-what", "sessions")
            await page.fill("#link-id", sid)
            await page.click("#link-show")
            await expect(page.locator("#writeback-failed")).to_contain_text("Transaction cancelled")
            await page.reload()
            failed_row = page.locator("#writebacks tr[data-state='failed']")
            await expect(failed_row).to_have_count(1)
            await failed_row.locator("button.retry").click()

            async def sent() -> bool:
                view = await session_tickets(server, sid)
                return [w["state"] for t in view["tickets"] for w in t["writebacks"]] == ["sent"]

            await wait_until(sent, timeout=30, what="the retried write-back to be sent")
            await page.select_option("#writeback-state", "sent")
            await expect(page.locator("#writebacks tr[data-state='sent']")).to_have_count(1)
            assert len(sn.journal) == 1 and "it works now" in sn.journal[0]["value"]
            assert server.console_app[TICKETS].settings.max_attempts == 2
            assert not console.csp_violations(), console.errors
            assert not [e for e in console.errors if "pageerror" in e], console.errors
            rows = await server.db.fetchall("SELECT * FROM ticket_connectors")
            assert sn.secret not in json.dumps(rows, default=repr)
