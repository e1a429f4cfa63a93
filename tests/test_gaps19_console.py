"""What technicians see of surveys and write-backs (issue 19 gaps), through the API and in Chromium.

Survey comments: on the request (``GET /api/v1/requests/{id}`` and the Queue page's detail) and in a
"Comments" table on the KPIs page (``GET /api/v1/kpis/comments``). Ticket write-back status: on the
session's viewer page and the request's detail, not only on the Tickets page. The person's comment is
hostile text: shown as text, never as markup. Real server, real ServiceNow fake over TLS, Chromium.
"""

from __future__ import annotations

import time
from pathlib import Path

from playwright.async_api import expect

from protocol.surveys import SurveyAnswer
from server.kpis import surveys
from tests import tickets_fakes
from tests.conftest import add_device
from tests.harness import running_server, wait_until
from tests.test_accounts_support import make_user
from tests.test_console_support import console_browser
from tests.test_session_helpers import api, install_test_auth
from tests.test_tickets_writeback import add_connector, add_request, fast, run_session, session_tickets
from tests.tickets_fakes import Scripted

COMMENT = "<b>fixed</b> & fast, thanks"


async def test_survey_comment_on_the_request_the_queue_and_the_kpis_page(tmp_path: Path) -> None:
    """A resolved request's survey (score 2, a comment with markup) is in its GET with the technician; the KPIs
    comments list has it for the period (and nothing for an earlier one); the Queue detail and the KPIs page's
    Comments table show the comment as text; another group's technician sees neither."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        device = await add_device(server.db, "dev-survey", "lab")
        rid = await add_request(server, device, urgency="normal")
        status, _ = await api(server, "GET", f"/api/v1/requests/{rid}", "ann")
        assert status == 200
        assert (await api(server, "GET", f"/api/v1/requests/{rid}", "ann"))[1]["survey"] is None
        assert (await api(server, "POST", f"/api/v1/requests/{rid}/resolve", "ann", {"category": "mail"}))[0] == 200

        async def asked() -> bool:
            return (await api(server, "GET", f"/api/v1/requests/{rid}", "ann"))[1]["survey"] is not None

        await wait_until(asked, timeout=15, what="the survey row of the resolved request")
        await surveys.record_answer(server.db, device, SurveyAnswer(request_id=rid, score=2, comment=COMMENT))
        _status, view = await api(server, "GET", f"/api/v1/requests/{rid}", "ann")
        assert (view["survey"]["score"], view["survey"]["comment"], view["survey"]["technician"]) == (2, COMMENT, "ann")
        assert view["survey"]["answered_at"] is not None
        status, listed = await api(server, "GET", "/api/v1/kpis/comments", "ann")
        assert status == 200
        assert [(c["request_id"], c["score"], c["comment"], c["technician"]) for c in listed["comments"]] == [
            (rid, 2, COMMENT, "ann")]
        number = listed["comments"][0]["number"]
        before = time.time() - 10 * 86400
        _status, earlier = await api(server, "GET", f"/api/v1/kpis/comments?from={before - 86400}&to={before}", "ann")
        assert earlier["comments"] == []
        assert (await api(server, "GET", "/api/v1/kpis/comments", "bob"))[1]["comments"] == []
        assert (await api(server, "GET", f"/api/v1/requests/{rid}", "bob"))[0] == 404

        tech = await make_user(server, "tech1", "technician", groups={"lab": None})
        async with console_browser(server) as console:
            page = console.page
            await console.login(tech)
            await page.goto(f"{console.base}/#/queue")
            await page.locator(f"tr[data-request-id='{rid}'] .queue-open").click()
            await expect(page.locator("#queue-survey")).to_have_attribute("data-score", "2")
            await expect(page.locator("#queue-survey-comment")).to_have_text(COMMENT)
            await page.goto(f"{console.base}/#/kpis")
            row = page.locator(f"#kpi-comments tr[data-request-id='{rid}']")
            await expect(row.locator("[data-col=comment]")).to_have_text(COMMENT)
            await expect(row.locator("[data-col=score]")).to_have_text("2")
            await expect(row.locator("[data-col=technician]")).to_have_text("ann")
            await expect(row.locator("[data-col=request]")).to_have_text(f"#{number}")
            assert await page.locator("#kpi-comments b").count() == 0  # the comment's markup stays text
            assert not console.csp_violations(), console.errors
            assert not [e for e in console.errors if "pageerror" in e], console.errors


async def test_writeback_status_on_the_session_and_the_request(tmp_path: Path) -> None:
    """A ticket created from a request; its session ends and ServiceNow keeps failing: the request's GET carries the
    failed write-back with the remote's error, and the viewer page of the session and the Queue detail of the
    request both show it (not only the Tickets page)."""
    async with running_server(tmp_path / "srv") as server, tickets_fakes.servicenow(tmp_path / "sn") as sn:
        install_test_auth(server)
        fast(server, max_attempts=2)
        device = await add_device(server.db, "dev-tickets", "lab")
        rid = await add_request(server, device, urgency="normal")
        connector = await add_connector(server, sn, "servicenow")
        status, _ = await api(server, "POST", f"/api/v1/requests/{rid}/tickets/new", "ann",
                              {"connector_id": connector["id"]})
        assert status in (200, 201)
        (incident,) = sn.incidents.values()
        sid = await run_session(server, device, rid, ["hello", "it works now"])
        sn.script += [Scripted("PATCH /api/now/table/incident/", 503, tickets_fakes.SN_BUSY) for _ in range(2)]
        assert (await api(server, "POST", f"/api/v1/sessions/{sid}/end", "ann"))[0] == 200

        async def failed() -> bool:
            return bool((await session_tickets(server, sid))["writeback_failed"])

        await wait_until(failed, timeout=30, what="the write-back to fail")
        _status, view = await api(server, "GET", f"/api/v1/requests/{rid}", "ann")
        assert view["tickets"]["writeback_failed"] is True
        assert [t["key"] for t in view["tickets"]["tickets"]] == [incident["number"]]
        assert any("Transaction cancelled" in e for e in view["tickets"]["writeback_errors"])

        tech = await make_user(server, "tech2", "technician", groups={"lab": None})
        async with console_browser(server) as console:
            page = console.page
            await console.login(tech)
            await page.goto(f"{console.base}/#/sessions/{sid}")
            await expect(page.locator("#viewer-tickets #writeback-failed")).to_contain_text("Transaction cancelled")
            await expect(page.locator("#viewer-tickets #linked-tickets")).to_contain_text(incident["number"])
            await page.goto(f"{console.base}/#/queue")
            await page.locator(f"tr[data-request-id='{rid}'] .queue-open").click()
            await expect(page.locator("#queue-tickets #writeback-failed")).to_contain_text("Transaction cancelled")
            await expect(page.locator("#queue-tickets #linked-tickets")).to_contain_text(incident["number"])
            assert not console.csp_violations(), console.errors
            assert not [e for e in console.errors if "pageerror" in e], console.errors
