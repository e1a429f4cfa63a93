"""Tickets on a real server: connectors configured by an admin, a ticket created from a request, and the
write-back at a session's end — once, with the transcript — through lost answers, 429s and final failure.

The session runs through the server's own driver and finish path (offered to a stand-in agent connection,
consented, started, chatted in, ended by its technician over the API); the ITSM systems are the local TLS
fakes of :mod:`tests.tickets_fakes`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest

from protocol.session import SessionAnswer
from protocol.toolkit import ChatMessage
from server import audit
from server.app import HelplineServer
from server.sessions import SESSIONS, chat
from server.tickets import TICKETS
from server.tickets.outbox import OutboxSettings, spec_of
from tests import tickets_fakes
from tests.conftest import add_device
from tests.harness import running_server, wait_until
from tests.test_session_helpers import PRINCIPALS, api, install_test_auth
from tests.tickets_fakes import Fake, Scripted


class StubAgent:
    """Stands in for the device's control connection: what the server sends it is kept in ``sent``."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.certificate_serial = "5e55"
        self.hello: Any = None  # AgentConnection.hello: what the device said (its capabilities); None = nothing
        self.sent: list[Any] = []

    async def send(self, message: Any) -> None:
        self.sent.append(message)

    async def reply_error(self, code: str, _message: str, _in_reply_to: str | None) -> None:
        self.sent.append(code)

    async def close(self, _code: Any, _reason: str) -> None:
        return None


def fast(server: HelplineServer, **overrides: Any) -> None:
    """Short backoff so retries happen within the test (Retry-After still applies)."""
    server.console_app[TICKETS].settings = OutboxSettings(**{"max_attempts": 3, "backoff_s": 0.05,
                                                             "backoff_cap_s": 0.2, "settle_s": 0.0,
                                                             "poll_s": 0.05, **overrides})


async def add_connector(server: HelplineServer, fake: Fake, kind: str, **extra: Any) -> dict[str, Any]:
    body = {"name": f"{kind}-main", "kind": kind, "url": fake.url, "username": fake.user, "ca_pem": fake.ca_pem,
            "secret": fake.secret, **extra}
    status, created = await api(server, "POST", "/api/v1/tickets/connectors", "root", body)
    assert status == 201, created
    return dict(created)


async def add_request(server: HelplineServer, device: str, urgency: str = "critical") -> str:
    request_id = "req-" + secrets.token_hex(6)
    now = time.time()
    row = await server.db.fetchone("SELECT COALESCE(MAX(number), 0) + 1 AS n FROM support_requests")
    number = int(row["n"]) if row is not None else 1  # two requests in one millisecond must not share a number
    await server.db.execute(
        "INSERT INTO support_requests (id, number, device_id, local_id, group_name, requester, summary, details,"
        " urgency, state, created_at, updated_at) VALUES (?, ?, ?, ?, 'lab', 'alice', ?, ?, ?, 'waiting', ?, ?)",
        (request_id, number, device, secrets.token_hex(16), "Outlook keeps asking for the password",
         "Since this morning, every 5 minutes", urgency, now, now))
    return request_id


async def run_session(server: HelplineServer, device: str, request_id: str | None, lines: list[str]) -> str:
    """A session through the server's driver: offered, consented by the user, started, chatted in; left running."""
    driver = server.console_app[SESSIONS]
    agent = StubAgent(device)
    server.connections.add(agent)  # type: ignore[arg-type]  # the stub has what the driver uses
    session = await driver.request(device_id=device, group="lab", technician=PRINCIPALS["ann"], mode="control",
                                   reason="password prompt")
    if request_id is not None:
        await server.db.execute("UPDATE sessions SET request_id = ? WHERE id = ?", (request_id, session.session_id))
    await driver.on_answer(agent, SessionAnswer(session_id=session.session_id, accepted=True,  # type: ignore[arg-type]
                                                by="user", mode_granted="control"))
    await driver.started(session)
    for seq, line in enumerate(lines):
        sender: Literal["technician", "user"] = "technician" if seq % 2 == 0 else "user"
        await chat.save_line(server.db, session.session_id, ChatMessage(
            seq=seq, sender=sender, text=line, at=time.time(), name="Ann" if sender == "technician" else "alice"))
    await audit.append(server.db, "user:ann", "session.file_sent", device,
                       {"session_id": session.session_id, "name": "fix-outlook.reg", "size": 812,
                        "sha256": hashlib.sha256(b"reg").hexdigest()})
    await audit.append(server.db, "user:ann", "device.service.action", device,
                       {"session_id": session.session_id, "unit": "cups.service", "action": "restart",
                        "done": True, "outcome": "restarted"})
    return session.session_id


async def session_tickets(server: HelplineServer, sid: str) -> dict[str, Any]:
    status, body = await api(server, "GET", f"/api/v1/sessions/{sid}/tickets", "ann")
    assert status == 200, body
    return dict(body)


def _all_sent(view: dict[str, Any], count: int) -> bool:
    states = [w["state"] for t in view["tickets"] for w in t["writebacks"]]
    return len(states) == count and all(s == "sent" for s in states)


async def test_connectors_secrets_encrypted_never_returned_nor_stored_in_clear(tmp_path: Path) -> None:
    """Admins configure connectors; the API says only "set"; the DB (file and rows) and audit never hold the secret;
    the key file is 0600; technicians see names only and cannot configure."""
    async with running_server(tmp_path / "srv") as server, \
            tickets_fakes.servicenow(tmp_path / "sn") as sn, tickets_fakes.jira(tmp_path / "jira") as jira:
        install_test_auth(server)
        created = await add_connector(server, sn, "servicenow")
        assert created["secret"] == "set" and sn.secret not in json.dumps(created)
        await add_connector(server, jira, "jira", project_key="HELP")
        status, listing = await api(server, "GET", "/api/v1/tickets/connectors", "root")
        assert status == 200 and {c["secret"] for c in listing["connectors"]} == {"set"}
        assert sn.secret not in json.dumps(listing) and jira.secret not in json.dumps(listing)
        status, mine = await api(server, "GET", "/api/v1/tickets/connectors", "ann")
        assert status == 200 and all(set(c) == {"id", "name", "kind", "enabled"} for c in mine["connectors"])
        status, refused = await api(server, "POST", "/api/v1/tickets/connectors", "ann",
                                    {"name": "x", "kind": "webhook", "url": "https://h/x", "secret": "s"})
        assert status == 403, refused
        status, bad = await api(server, "POST", "/api/v1/tickets/connectors", "root",
                                {"name": "plain", "kind": "webhook", "url": "http://h/x", "secret": "s"})
        assert status == 400, bad
        # An update without a secret keeps it; with one, replaces it (audited as changed, never shown).
        path = f"/api/v1/tickets/connectors/{created['id']}"
        update = {"name": "servicenow-main", "kind": "servicenow", "url": sn.url, "username": sn.user,
                  "ca_pem": sn.ca_pem}
        assert (await api(server, "PUT", path, "root", update))[0] == 200
        row = await server.db.fetchone("SELECT * FROM ticket_connectors WHERE id = ?", (created["id"],))
        box = server.console_app[TICKETS].box
        assert row is not None and spec_of(row, box).secret == sn.secret
        assert (await api(server, "PUT", path, "root", {**update, "secret": "rotated-Secret-99"}))[0] == 200
        row = await server.db.fetchone("SELECT * FROM ticket_connectors WHERE id = ?", (created["id"],))
        assert row is not None and spec_of(row, box).secret == "rotated-Secret-99"
        changes = await audit.recent(server.db, action="ticket.connector.*")
        assert [r["action"] for r in changes] == ["ticket.connector.update", "ticket.connector.update",
                                                  "ticket.connector.create", "ticket.connector.create"]
        assert [json.loads(r["details"])["secret_changed"] for r in changes[:2]] == [True, False]
        key = os.stat(box.path)
        assert stat.S_IMODE(key.st_mode) == 0o600 and key.st_size == 32
        every_row = json.dumps([await server.db.fetchall(f"SELECT * FROM {t}")
                                for t in ("ticket_connectors", "audit_log")], default=repr)
        for secret in (sn.secret, jira.secret, "rotated-Secret-99"):
            assert secret not in every_row
            for suffix in ("", "-wal"):
                db_file = server.config.data_dir / f"helpline.db{suffix}"
                if db_file.exists():
                    assert secret.encode() not in db_file.read_bytes()


async def test_ticket_from_request_and_one_writeback_per_ticket_at_session_end(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A request opens a ServiceNow incident (critical → P1); its session, also linked to a Jira issue and a webhook,
    ends: each ticket gets exactly one note with the transcript, through a lost answer (SN: found in the journal,
    not re-sent) and a 429 (Jira: retried after Retry-After); nothing is sent again afterwards; no secret in logs."""
    caplog.set_level(logging.DEBUG)
    async with running_server(tmp_path / "srv") as server, tickets_fakes.servicenow(tmp_path / "sn") as sn, \
            tickets_fakes.jira(tmp_path / "jira") as jira, tickets_fakes.receiver(tmp_path / "hook") as hook:
        install_test_auth(server)
        fast(server)
        device = await add_device(server.db, "dev-tickets", "lab")
        sn_conn = await add_connector(server, sn, "servicenow")
        jira_conn = await add_connector(server, jira, "jira", project_key="HELP")
        hook_conn = await add_connector(server, hook, "webhook")
        request_id = await add_request(server, device)
        status, made = await api(server, "POST", f"/api/v1/requests/{request_id}/tickets/new", "ann",
                                 {"connector_id": sn_conn["id"]})
        assert status == 201, made
        (incident,) = sn.incidents.values()
        assert (incident["impact"], incident["urgency"]) == ("1", "1")
        assert incident["short_description"] == "Outlook keeps asking for the password"
        assert "alice" in incident["description"] and "dev-tickets" in incident["description"]
        assert made["tickets"][0]["key"] == incident["number"] and made["tickets"][0]["created_ticket"]
        again = await api(server, "POST", f"/api/v1/requests/{request_id}/tickets/new", "ann",
                          {"connector_id": sn_conn["id"]})
        assert again[0] == 409 and len(sn.incidents) == 1

        lines = ["Hello, Ann from IT here", "hi, outlook again", "Resetting the credential store now", "thanks!"]
        sid = await run_session(server, device, request_id, lines)
        jira.issues["HELP-7"] = {"summary": "Mail"}
        jira.comments["HELP-7"] = []
        status, linked = await api(server, "POST", f"/api/v1/sessions/{sid}/tickets", "ann",
                                   {"connector_id": jira_conn["id"], "key": "HELP-7"})
        assert status == 201, linked
        status, linked = await api(server, "POST", f"/api/v1/sessions/{sid}/tickets", "ann",
                                   {"connector_id": hook_conn["id"], "key": "EXT-9"})
        assert status == 201, linked
        missing = await api(server, "POST", f"/api/v1/sessions/{sid}/tickets", "ann",
                            {"connector_id": jira_conn["id"], "key": "HELP-404"})
        assert missing[0] == 400, missing
        assert (await api(server, "PUT", f"/api/v1/sessions/{sid}/notes", "ann",
                          {"text": "Credential store was corrupt; reset it."}))[0] == 200
        sn.script.append(Scripted("PATCH /api/now/table/incident/", 0, None, drop_after=True))
        jira.script.append(Scripted("POST /rest/api/3/issue/HELP-7/comment", 429,
                                    {"errorMessages": ["Rate limit exceeded."], "errors": {}}, {"Retry-After": "1"}))

        status, ended = await api(server, "POST", f"/api/v1/sessions/{sid}/end", "ann")
        assert status == 200 and ended["state"] == "ended", ended

        async def all_sent() -> bool:
            return _all_sent(await session_tickets(server, sid), 3)

        await wait_until(all_sent, timeout=30, what="three write-backs sent")
        (note,) = [j for j in sn.journal if j["element_id"] == incident["sys_id"]]
        for expected in [*lines, "consent by the device user", "Technician: ann (ann)", "Credential store was corrupt",
                         "sent to the device: fix-outlook.reg (812 bytes", "service action restart cups.service",
                         "Recording: (not recorded)", "duration", f"Helpline remote session {sid}"]:
            assert expected in note["value"], expected
        (comment,) = jira.comments["HELP-7"]
        assert lines[2] in json.dumps(comment["body"])
        comment_posts = [at for method, path, at in jira.requests if method == "POST" and path.endswith("/comment")]
        assert len(comment_posts) == 2 and comment_posts[1] - comment_posts[0] >= 0.9  # Retry-After: 1 honoured
        (delivered,) = [r for r in hook.received if r["payload"]["event"] == "session.writeback"]
        assert [c["text"] for c in delivered["payload"]["session"]["chat"]] == lines
        assert delivered["payload"]["ticket"] == "EXT-9"

        view = await session_tickets(server, sid)
        by_kind = {t["kind"]: t["writebacks"][0] for t in view["tickets"]}
        assert by_kind["servicenow"]["note_id"] == note["sys_id"] and by_kind["servicenow"]["attempts"] == 2
        assert by_kind["jira"]["note_id"] == comment["id"] and by_kind["jira"]["attempts"] == 2
        assert not view["writeback_failed"]
        status, for_request = await api(server, "GET", f"/api/v1/requests/{request_id}/tickets", "ann")
        assert status == 200 and for_request["tickets"][0]["writebacks"][0]["state"] == "sent"

        outbox = server.console_app[TICKETS]
        assert await outbox.enqueue(sid) == 0 and await outbox.sweep() == 0
        async with aiohttp.ClientSession() as http:  # one more pass, in the test's hands: nothing is due
            assert await outbox.deliver_due(http) == 0
        patches = sum(1 for m, _, _ in sn.requests if m == "PATCH")
        assert len(sn.journal) == 1 and len(jira.comments["HELP-7"]) == 1 and len(hook.received) == 1
        assert sum(1 for m, _, _ in sn.requests if m == "PATCH") == patches == 1
        assert len(await audit.recent(server.db, action="ticket.writeback_sent")) == 3
        for secret in (sn.secret, jira.secret, hook.secret):
            assert secret not in caplog.text


async def test_failing_writeback_is_retried_then_shown_and_audited_then_retried_by_an_admin(tmp_path: Path) -> None:
    """ServiceNow answers 503 (its error body) to every work note: retried max_attempts times with backoff, then
    failed — shown on the session and the request, listed for admins, audited; an admin's retry then writes it once."""
    async with running_server(tmp_path / "srv") as server, tickets_fakes.servicenow(tmp_path / "sn") as sn:
        install_test_auth(server)
        fast(server)
        device = await add_device(server.db, "dev-fail", "lab")
        conn = await add_connector(server, sn, "servicenow")
        request_id = await add_request(server, device, urgency="low")
        status, _ = await api(server, "POST", f"/api/v1/requests/{request_id}/tickets/new", "ann",
                              {"connector_id": conn["id"]})
        assert status == 201
        (incident,) = sn.incidents.values()
        assert (incident["impact"], incident["urgency"]) == ("3", "3")
        sid = await run_session(server, device, request_id, ["hi", "hello"])
        sn.script += [Scripted("PATCH /api/now/table/incident/", 503, tickets_fakes.SN_BUSY) for _ in range(3)]
        assert (await api(server, "POST", f"/api/v1/sessions/{sid}/end", "ann"))[0] == 200

        async def failed() -> bool:
            return bool((await session_tickets(server, sid))["writeback_failed"])

        await wait_until(failed, timeout=30, what="the write-back to fail for good")
        view = await session_tickets(server, sid)
        (wb,) = view["tickets"][0]["writebacks"]
        assert wb["state"] == "failed" and wb["attempts"] == 3
        assert "HTTP 503: Transaction cancelled: maximum execution time exceeded" in wb["last_error"]
        assert view["writeback_errors"] == [wb["last_error"]]
        assert sum(1 for m, _, _ in sn.requests if m == "PATCH") == 3 and sn.journal == []
        status, for_request = await api(server, "GET", f"/api/v1/requests/{request_id}/tickets", "ann")
        assert for_request["writeback_failed"] is True
        status, listed = await api(server, "GET", "/api/v1/tickets/writebacks", "root", None)
        assert status == 200 and listed["writebacks"][0]["state"] == "failed"
        (record,) = await audit.recent(server.db, action="ticket.writeback_failed")
        assert json.loads(record["details"])["session_id"] == sid and record["target"] == device
        assert (await api(server, "POST", f"/api/v1/tickets/writebacks/{wb['id']}/retry", "ann"))[0] == 403
        status, retried = await api(server, "POST", f"/api/v1/tickets/writebacks/{wb['id']}/retry", "root")
        assert status == 200, retried

        async def sent() -> bool:
            return _all_sent(await session_tickets(server, sid), 1)

        await wait_until(sent, timeout=30, what="the admin's retry to be sent")
        assert len(sn.journal) == 1 and "hello" in sn.journal[0]["value"]
        assert len(await audit.recent(server.db, action="ticket.writeback_retry")) == 1
