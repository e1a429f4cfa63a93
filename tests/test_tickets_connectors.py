"""Ticket connectors against local servers speaking ServiceNow's, Jira's and a webhook receiver's shapes.

Real TLS throughout: the fakes hold a certificate from a test CA that the connectors trust only
through their ``ca_pem`` setting.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import aiohttp
import pytest

from server.tickets import webhook
from server.tickets.connectors import ConnectorSpec, NewTicket, Note, TicketRef, build
from server.tickets.http import TicketError, retry_after
from tests import tickets_fakes
from tests.tickets_fakes import Scripted

TICKET = NewTicket(summary="Printer on floor 3 jams", details="Jams on every duplex job", device="pc-17 (dev-1)",
                   requester="alice", urgency="high", request_id="req-1", request_number=7, idempotency_key="k1")


def _spec(fake: tickets_fakes.Fake, kind: str, **settings: str) -> ConnectorSpec:
    return ConnectorSpec("tc-1", f"test-{kind}", kind, fake.url,  # type: ignore[arg-type]
                         {"username": fake.user, "ca_pem": fake.ca_pem, **settings}, fake.secret)


async def test_servicenow_incident_created_with_mapped_priority_and_note_found_by_marker(tmp_path: Path) -> None:
    """POST incident (high → impact 2, urgency 1), find it by number, work note written and found by its marker."""
    async with tickets_fakes.servicenow(tmp_path) as fake, aiohttp.ClientSession() as http:
        sn = build(_spec(fake, "servicenow"), http)
        ref = await sn.create(TICKET)
        incident = fake.incidents[ref.remote_id]
        assert ref.key == incident["number"] and ref.url.endswith(ref.remote_id)
        assert (incident["impact"], incident["urgency"]) == ("2", "1")
        assert incident["short_description"] == TICKET.summary and "alice" in incident["description"]
        assert incident["correlation_id"] == "k1"
        assert await sn.find(ref.key) == ref
        assert await sn.find_note(ref, "helpline-writeback:x1") is None
        note_id = await sn.add_note(ref, Note("did things\nhelpline-writeback:x1", "helpline-writeback:x1"))
        assert [j["sys_id"] for j in fake.journal] == [note_id]
        assert await sn.find_note(ref, "helpline-writeback:x1") == note_id


async def test_servicenow_error_bodies_and_rate_limit(tmp_path: Path) -> None:
    """SN's error body becomes the message; 401/404 are permanent; 429 carries Retry-After; 5xx is transient."""
    async with tickets_fakes.servicenow(tmp_path) as fake, aiohttp.ClientSession() as http:
        with pytest.raises(TicketError) as bad_auth:
            await build(ConnectorSpec("tc", "sn", "servicenow", fake.url, {"username": fake.user,
                                                                           "ca_pem": fake.ca_pem}, "wrong"),
                        http).create(TICKET)
        assert bad_auth.value.status == 401 and bad_auth.value.permanent
        assert "User Not Authenticated: Required to provide Auth information" in bad_auth.value.message
        sn = build(_spec(fake, "servicenow"), http)
        with pytest.raises(TicketError) as missing:
            await sn.add_note(TicketRef("INC1", "0" * 32), Note("x", "m"))
        assert missing.value.permanent and "No Record found" in missing.value.message
        fake.script.append(Scripted("POST /api/now/table/incident", 429, tickets_fakes.SN_BUSY,
                                    {"Retry-After": "7"}))
        with pytest.raises(TicketError) as limited:
            await sn.create(TICKET)
        assert limited.value.status == 429 and limited.value.retry_after == 7.0 and not limited.value.permanent
        fake.script.append(Scripted("POST", 503, tickets_fakes.SN_BUSY))
        with pytest.raises(TicketError) as busy:
            await sn.create(TICKET)
        assert not busy.value.permanent and "Transaction cancelled" in busy.value.message
        with pytest.raises(TicketError) as nope:
            await sn.find("INC9999999")
        assert nope.value.status == 404


async def test_jira_issue_comment_and_errors(tmp_path: Path) -> None:
    """Issue created in the project with priority High; comment id recorded; Jira's errors/errorMessages read."""
    async with tickets_fakes.jira(tmp_path) as fake, aiohttp.ClientSession() as http:
        jira = build(_spec(fake, "jira", project_key="HELP", issue_type="Incident"), http)
        ref = await jira.create(TICKET)
        fields = fake.issues[ref.key]
        assert ref.key == "HELP-1" and ref.url == f"{fake.url}/browse/HELP-1"
        assert fields["priority"] == {"name": "High"} and fields["issuetype"] == {"name": "Incident"}
        assert fields["description"]["type"] == "doc"
        note_id = await jira.add_note(ref, Note("line one\nhelpline-writeback:j1", "helpline-writeback:j1"))
        assert fake.comments["HELP-1"][0]["id"] == note_id
        assert await jira.find_note(ref, "helpline-writeback:j1") == note_id
        assert await jira.find_note(ref, "helpline-writeback:other") is None
        with pytest.raises(TicketError) as missing:
            await jira.find("HELP-99")
        assert missing.value.status == 404 and "Issue does not exist" in missing.value.message
        with pytest.raises(TicketError) as invalid:
            await jira.create(NewTicket(**{**TICKET.__dict__, "summary": ""}))
        assert invalid.value.permanent and "summary: You must specify a summary" in invalid.value.message
        fake.script.append(Scripted("POST /rest/api/3/issue/HELP-1/comment", 429,
                                    {"errorMessages": ["Rate limit exceeded."], "errors": {}},
                                    {"Retry-After": "3"}))
        with pytest.raises(TicketError) as limited:
            await jira.add_note(ref, Note("again", "m2"))
        assert limited.value.retry_after == 3.0 and "Rate limit exceeded." in limited.value.message


async def test_untrusted_certificate_is_refused(tmp_path: Path) -> None:
    """Without the fake's CA in ca_pem, the system CAs do not vouch for it: a permanent TLS error, nothing sent."""
    async with tickets_fakes.jira(tmp_path) as fake, aiohttp.ClientSession() as http:
        spec = ConnectorSpec("tc", "j", "jira", fake.url, {"username": fake.user, "project_key": "HELP"}, fake.secret)
        with pytest.raises(TicketError) as refused:
            await build(spec, http).create(TICKET)
        assert refused.value.permanent and "certificate" in refused.value.message
        assert fake.requests == []


async def test_webhook_signature_verifies_and_replays_are_refused(tmp_path: Path) -> None:
    """The receiver verifies t+body HMAC; a changed body, another key or an old timestamp fail verification."""
    async with tickets_fakes.receiver(tmp_path) as fake, aiohttp.ClientSession() as http:
        hook = build(_spec(fake, "webhook"), http)
        ref = await hook.create(TICKET)
        assert ref.key == "WH-1" and fake.refused == []
        sent = fake.received[0]
        header = sent["headers"][webhook.SIGNATURE_HEADER]
        assert sent["payload"]["ticket"]["priority"] == 2 and sent["headers"][webhook.IDEMPOTENCY_HEADER] == "k1"
        now = time.time()
        assert webhook.verify(fake.secret.encode(), header, sent["raw"], now)
        assert not webhook.verify(fake.secret.encode(), header, sent["raw"].replace(b"Printer", b"Scanner"), now)
        assert not webhook.verify(b"another key", header, sent["raw"], now)
        assert not webhook.verify(fake.secret.encode(), header, sent["raw"], now + webhook.REPLAY_WINDOW_S + 5)
        note = Note("text", "helpline-writeback:w1", {"session_id": "s1"})
        first = await hook.add_note(ref, note)
        again = await hook.add_note(ref, note)
        assert first == "note-2" and again == "w1" and len(fake.received) == 2  # the receiver dropped the repeat
        assert json.loads(fake.received[1]["raw"])["session"] == {"session_id": "s1"}
        wrong = build(ConnectorSpec("tc", "w", "webhook", fake.url, {"ca_pem": fake.ca_pem}, "not the secret"), http)
        with pytest.raises(TicketError) as refused:
            await wrong.add_note(ref, Note("x", "helpline-writeback:w2"))
        assert refused.value.status == 401 and fake.refused == ["bad signature"]


def test_retry_after_forms() -> None:
    """Delta seconds, an HTTP date, garbage and an absurd delay."""
    assert retry_after("12") == 12.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after("soon") is None and retry_after(None) is None
    assert retry_after("999999") == 3600.0


async def test_servicenow_work_note_renders_no_html_and_bad_numbers_are_not_keys(tmp_path: Path) -> None:
    """A chat line with [code]<img …>[/code] (any case, spaces) reaches the work note with the tags broken up, the
    marker intact; an incident number that is not a ticket key (markup) is not used as the key: the sys_id is."""
    async with tickets_fakes.servicenow(tmp_path) as fake, aiohttp.ClientSession() as http:
        sn = build(_spec(fake, "servicenow"), http)
        ref = await sn.create(TICKET)
        chat = "user: [code]<img src=x onerror=alert(1)>[/code] and [ CODE ]<b>x</b>[/ Code]"
        note_id = await sn.add_note(ref, Note(f"{chat}\nhelpline-writeback:x2", "helpline-writeback:x2"))
        (written,) = fake.journal
        assert re.search(r"\[\s*/?\s*code\s*\]", written["value"], re.IGNORECASE) is None, written["value"]
        assert "<img src=x onerror=alert(1)>" in written["value"]  # the text itself stays, as text
        assert await sn.find_note(ref, "helpline-writeback:x2") == note_id
        fake.incidents[ref.remote_id]["number"] = "<b>INC1</b>"
        fake.script.append(Scripted("GET /api/now/table/incident/", 200,
                                    {"result": {"sys_id": ref.remote_id, "number": "<b>INC1</b>"}}))
        found = await sn.find(ref.remote_id)
        assert found.key == ref.remote_id and found.remote_id == ref.remote_id
