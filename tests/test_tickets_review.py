"""Review fixes in the tickets area, on a real server: bad connector URLs are 400s, a rename onto an existing
name is a 409, the write-back outbox drops its copy of the transcript once sent and holds its claims."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from server.app import HelplineServer
from server.lifecycle.purge import purge_device
from server.tickets import TICKETS, repository
from tests import tickets_fakes
from tests.conftest import add_device
from tests.harness import running_server, wait_until
from tests.test_session_helpers import api, install_test_auth
from tests.test_tickets_writeback import add_connector, add_request, fast, run_session
from tests.tickets_fakes import Scripted


async def test_connector_url_that_does_not_parse_and_rename_onto_existing_name(tmp_path: Path) -> None:
    """"https://[" (urlsplit: Invalid IPv6 URL) and a bad port are 400, not 500; renaming onto a taken name is 409."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        for url in ("https://[", "https://h:99999/", "https://h:x/"):
            status, body = await api(server, "POST", "/api/v1/tickets/connectors", "root",
                                     {"name": "bad", "kind": "webhook", "url": url, "secret": "s"})
            assert status == 400, (url, body)
        made = []
        for name in ("first", "second"):
            status, body = await api(server, "POST", "/api/v1/tickets/connectors", "root",
                                     {"name": name, "kind": "webhook", "url": "https://h/x", "secret": "s"})
            assert status == 201, body
            made.append(body)
        path = f"/api/v1/tickets/connectors/{made[1]['id']}"
        status, body = await api(server, "PUT", path, "root", {"name": "first", "kind": "webhook",
                                                                "url": "https://h/x"})
        assert status == 409 and body["error"]["code"] == "exists", body
        status, body = await api(server, "PUT", path, "root", {"name": "second", "kind": "webhook",
                                                                "url": "https://h/y"})
        assert status == 200 and body["url"] == "https://h/y", body


async def _writeback(server: HelplineServer, sid: str) -> dict[str, Any]:
    row = await server.db.fetchone("SELECT * FROM ticket_writebacks WHERE session_id = ?", (sid,))
    assert row is not None
    return dict(row)


async def test_outbox_drops_its_copy_holds_claims_and_fails_unexpected_errors_once(tmp_path: Path) -> None:
    """A sent write-back keeps no copy of the transcript; a failed one's copy goes with the device's purge; a row
    whose session is gone fails for good (not retried every pass); a worker whose claim ran out changes nothing."""
    async with running_server(tmp_path / "srv") as server, tickets_fakes.jira(tmp_path / "jira") as jira:
        install_test_auth(server)
        fast(server)
        device = await add_device(server.db, "dev-review", "lab")
        conn = await add_connector(server, jira, "jira", project_key="HELP")
        for key in ("HELP-7", "HELP-8"):
            jira.issues[key] = {"summary": "Mail"}
            jira.comments[key] = []
        sids = []
        for key in ("HELP-7", "HELP-8"):
            sid = await run_session(server, device, None, ["secret transcript line", "ok"])
            status, linked = await api(server, "POST", f"/api/v1/sessions/{sid}/tickets", "ann",
                                       {"connector_id": conn["id"], "key": key})
            assert status == 201, linked
            sids.append(sid)
        jira.script.append(Scripted("POST /rest/api/3/issue/HELP-8/comment", 401, {"errorMessages": ["no"]}))
        for sid in sids:
            assert (await api(server, "POST", f"/api/v1/sessions/{sid}/end", "ann"))[0] == 200
        await wait_until(lambda: len(jira.comments["HELP-7"]) == 1, timeout=30, what="the note sent")

        async def settled() -> bool:
            return {(await _writeback(server, s))["state"] for s in sids} <= {"sent", "failed"}
        await wait_until(settled, timeout=30, what="both write-backs settled")
        sent, failed = await _writeback(server, sids[0]), await _writeback(server, sids[1])
        assert sent["state"] == "sent" and sent["body"] is None, sent
        assert failed["state"] == "failed" and "secret transcript line" in failed["body"], failed

        # The device is purged: the failed row's copy of the transcript goes too.
        await server.db.execute("UPDATE devices SET status = 'revoked' WHERE id = ?", (device,))
        await purge_device(server.db, device, actor="user:root", recordings_dir=tmp_path / "rec",
                           artifacts_dir=tmp_path / "art", store=None)
        assert (await _writeback(server, sids[1]))["body"] is None

        # A row whose session is gone: compose raises LookupError; the row fails for good.
        link_id = sent["link_id"]
        await server.db.execute(
            "INSERT INTO ticket_writebacks (link_id, session_id, idempotency_key, state, next_attempt_at, created_at)"
            " VALUES (?, 'ses-gone', 'k-gone', 'pending', ?, ?)", (link_id, time.time(), time.time()))
        server.console_app[TICKETS].wake.set()

        async def gone_failed() -> bool:
            return bool((await _writeback(server, "ses-gone"))["state"] == "failed")
        await wait_until(gone_failed, timeout=30, what="the orphan row failed")
        assert "LookupError" in (await _writeback(server, "ses-gone"))["last_error"]

        # Claims: a worker whose claim ran out (another took the row) can neither mark it sent nor failed.
        await server.db.execute("UPDATE ticket_writebacks SET state = 'pending' WHERE session_id = 'ses-gone'")
        row_id = int((await _writeback(server, "ses-gone"))["id"])
        now = time.time() + 3600  # later than any claim the running worker holds
        old = await repository.claim(server.db, row_id, now, 1.0)
        assert old is not None and await repository.claim(server.db, row_id, now + 0.5, 60.0) is None
        new = await repository.claim(server.db, row_id, now + 2.0, 60.0)
        assert new is not None and new != old
        assert not await repository.mark_sent(server.db, row_id, old, "n-1", 1, now)
        assert not await repository.mark_failed(server.db, row_id, old, 1, "x", now, False)
        assert not await repository.mark_in_doubt(server.db, row_id, old)
        assert (await _writeback(server, "ses-gone"))["state"] == "pending"
        assert await repository.mark_sent(server.db, row_id, new, "n-1", 1, now)
        assert (await _writeback(server, "ses-gone"))["state"] == "sent"


async def test_create_ticket_twice_at_once_opens_one_incident(tmp_path: Path) -> None:
    """Five concurrent "new ticket" clicks for one request: one 201, four 409, one incident in ServiceNow; a create
    the remote refused (502) leaves no reservation behind, so the next click creates it."""
    async with running_server(tmp_path / "srv") as server, tickets_fakes.servicenow(tmp_path / "sn") as sn:
        install_test_auth(server)
        device = await add_device(server.db, "dev-create", "lab")
        conn = await add_connector(server, sn, "servicenow")
        first, second = await add_request(server, device), await add_request(server, device)
        results = await asyncio.gather(*(api(server, "POST", f"/api/v1/requests/{first}/tickets/new", "ann",
                                             {"connector_id": conn["id"]}) for _ in range(5)))
        assert sorted(status for status, _ in results) == [201, 409, 409, 409, 409], results
        assert len(sn.incidents) == 1
        (made,) = [body for status, body in results if status == 201]
        assert [t["key"] for t in made["tickets"]] == [next(iter(sn.incidents.values()))["number"]]

        sn.script.append(Scripted("POST /api/now/table/incident", 500, {"error": {"message": "boom"}}))
        status, body = await api(server, "POST", f"/api/v1/requests/{second}/tickets/new", "ann",
                                 {"connector_id": conn["id"]})
        assert status == 502, body
        status, listed = await api(server, "GET", f"/api/v1/requests/{second}/tickets", "ann")
        assert status == 200 and listed["tickets"] == [], listed
        status, body = await api(server, "POST", f"/api/v1/requests/{second}/tickets/new", "ann",
                                 {"connector_id": conn["id"]})
        assert status == 201 and len(sn.incidents) == 2, body
