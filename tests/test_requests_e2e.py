"""Support requests end to end on a real server (TLS, mTLS device channel, SQLite or PostgreSQL): a device's
request.open reaches the REST queue and the Slack/Teams receivers, a technician's claim/note/resolve reach the
device as request.status, reopen within 7 days, a session from a request names it in the offer, malformed
requests are refused without harm, and open requests are re-sent on connect."""

from __future__ import annotations

import base64
import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from protocol.requests import Diagnostic, FixAttempt, FixOutcome, RequestAdd, RequestOpen, RequestWithdraw
from server.accounts import admin
from server.auth.rights import Right
from server.requests.config import RequestsConfig
from tests.harness import console_url, enroll_agent, running_server, wait_until
from tests.requests_helpers import PNG_1PX, HookReceiver, device_channel
from tests.test_accounts_support import client, make_user


def is_error_for(message_id: str, message: dict[str, Any]) -> bool:
    return message.get("type") == "error" and message.get("in_reply_to") == message_id


async def call(http: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, path, json=body) as resp:
        data = await resp.read()
        return resp.status, (json.loads(data) if resp.content_type == "application/json" else data)


async def test_request_lifecycle_device_queue_and_webhooks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """open (idempotent) → queue + Slack/Teams; claim/note/resolve/reopen reach the device; user adds → reopened;
    screenshot only for the group's technicians; withdraw; fix.outcome audited; status re-sent on connect."""
    caplog.set_level(logging.DEBUG)
    slack, teams = HookReceiver(), HookReceiver()
    slack.fail_first = 1  # the first POST fails: the delivery is retried
    slack_url, teams_url = await slack.start() + "/services/T0/B0/secret", await teams.start() + "/workflows/x"
    config = RequestsConfig(slack_webhook_url=slack_url, teams_webhook_url=teams_url, waiting_threshold_s=1.0,
                            waiting_check_s=0.2)
    try:
        async with running_server(tmp_path / "srv", requests=config) as server:
            await make_user(server, "tess", "technician", groups={"lab": None})
            await make_user(server, "olly", "technician", groups={"other": None})
            tess = await admin.create_token(server.db, "tess", "t", None, actor="test")
            olly = await admin.create_token(server.db, "olly", "t", None, actor="test")
            state = await enroll_agent(server, tmp_path / "dev", group="lab")
            async with device_channel(state, server.agent_port) as dev, \
                    client(server, Authorization=f"Bearer {tess.token}") as http, \
                    client(server, Authorization=f"Bearer {olly.token}") as other:
                opened = RequestOpen(local_id="1" * 32, summary="Printer offline", details="since noon",
                                     urgency="high", requester="ann", screenshot=PNG_1PX,
                                     diagnostics=[Diagnostic(code="disk_full", severity="warning", text="/ 97%")])
                await dev.send(opened)
                first = await dev.status(state="waiting")
                rid, number = first["request_id"], first["number"]
                await dev.send(opened)  # a resend after a lost connection: the same request
                await dev.ping()
                assert {m["request_id"] for m in dev.received if m.get("type") == "request.status"} == {rid}

                status, listed = await call(http, "GET", "/api/v1/requests")
                assert status == 200 and [r["id"] for r in listed["requests"]] == [rid]
                assert listed["requests"][0]["summary"] == "Printer offline" and listed["requests"][0]["has_screenshot"]
                status, png = await call(http, "GET", f"/api/v1/requests/{rid}/screenshot")
                assert status == 200 and png == PNG_1PX
                assert (await call(other, "GET", f"/api/v1/requests/{rid}/screenshot"))[0] == 404
                assert (await call(other, "GET", "/api/v1/requests"))[1]["requests"] == []
                status, one = await call(http, "GET", f"/api/v1/requests/{rid}")
                assert one["diagnostics"][0]["code"] == "disk_full" and one["events"][0]["kind"] == "created"

                # Announcements: new, then (unclaimed past 1 s) waiting — the Slack one after a failed attempt.
                await wait_until(lambda: len(teams.posts) >= 2 and len(slack.posts) >= 2, timeout=30,
                                 what="new + waiting announcements on both")
                # (the failed first attempt is retried after a random backoff: either may arrive first)
                assert {path for path, _ in slack.posts} == {"/services/T0/B0/secret"}
                s_new = next(p for _, p in slack.posts if p["text"].startswith("New support request"))
                s_wait = next(p for _, p in slack.posts if "has been waiting" in p["text"])
                assert "Printer offline" in s_new["text"] and "Printer offline" in s_wait["text"]
                assert f"#{number}" in s_new["text"] and s_new["blocks"][0]["type"] == "section"
                card = next(p for _, p in teams.posts if "New support request" in json.dumps(p))
                assert card["type"] == "message"
                assert card["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
                assert card["attachments"][0]["content"]["type"] == "AdaptiveCard"
                assert "Printer offline" in json.dumps(card)

                mark = len(dev.received)
                status, claimed = await call(http, "POST", f"/api/v1/requests/{rid}/claim")
                assert status == 200 and claimed["state"] == "claimed"
                await dev.status(rid, after=mark, state="claimed", claimed_by="tess")
                assert (await call(http, "POST", f"/api/v1/requests/{rid}/claim"))[0] == 409
                await call(http, "POST", f"/api/v1/requests/{rid}/notes", {"text": "Restarting the spooler"})
                await dev.status(rid, after=mark, note="Restarting the spooler")
                status, resolved = await call(http, "POST", f"/api/v1/requests/{rid}/resolve",
                                              {"category": "printer", "notes": "spooler restarted"})
                assert status == 200 and resolved["category"] == "printer"
                await dev.status(rid, after=mark, state="resolved")
                status, reopened = await call(http, "POST", f"/api/v1/requests/{rid}/reopen")
                assert reopened["state"] == "waiting" and reopened["reopened_count"] == 1 and reopened["reopened"]
                await call(http, "POST", f"/api/v1/requests/{rid}/resolve", {"category": "printer"})
                await dev.status(rid, after=len(dev.received) - 1, state="resolved")
                # The user adds to the resolved request: it is reopened.
                before_add = len(dev.received)  # not `mark`: the first reopen's "waiting" is older than it
                await dev.send(RequestAdd(local_id="1" * 32, text="It is offline again"))
                await dev.status(rid, after=before_add, state="waiting")
                status, one = await call(http, "GET", f"/api/v1/requests/{rid}")
                assert one["reopened_count"] == 2
                kinds = [e["kind"] for e in one["events"]]
                assert kinds[:3] == ["created", "announced", "announced"] and kinds.count("reopened") == 2
                assert kinds[-2:] == ["note", "reopened"]

                # A self-service attempt that did not help: an escalated request with the attempt attached.
                await dev.send(RequestOpen(local_id="2" * 32, summary="No network", attempt=FixAttempt(
                    fix_id="flush-dns", title="Flush DNS", outcome="didnt_help", detail="still failing")))
                second = await dev.status(state="waiting", number=number + 1)
                status, esc = await call(http, "GET", f"/api/v1/requests/{second['request_id']}")
                assert esc["escalated"] and esc["attempt"]["fix_id"] == "flush-dns"
                await dev.send(RequestWithdraw(local_id="2" * 32))
                await dev.status(second["request_id"], state="withdrawn")
                await dev.send(FixOutcome(fix_id="clear-temp", title="Clear temp files", ok=True, detail="freed 2 GB"))
                await dev.ping()
                audit = await server.db.fetchall("SELECT action, actor FROM audit_log WHERE action = 'fix.run'")
                assert audit == [{"action": "fix.run", "actor": f"device:{state.device_id}"}]

            # A new connection is told about the still-open request at once.
            async with device_channel(state, server.agent_port) as again:
                await again.status(rid, state="waiting")
    finally:
        await slack.stop()
        await teams.stop()
    # The webhook URLs are secrets: never logged, never in the audit log or the stored events.
    logged = [f"{r.getMessage()} {r.__dict__}" for r in caplog.records]
    assert logged and not [line for line in logged if "secret" in line or "/workflows/x" in line]
    async with running_server(tmp_path / "srv") as server:
        rows = await server.db.fetchall("SELECT details FROM audit_log")
        events = await server.db.fetchall("SELECT detail FROM support_request_events")
        assert "secret" not in json.dumps(rows) and "secret" not in json.dumps(events)


async def test_malformed_requests_are_refused_without_harm(tmp_path: Path) -> None:
    """Bad local_id, oversized summary/screenshot, too many diagnostics, a non-PNG, an unknown local_id: each is
    answered with an error naming the message; nothing is stored and the channel keeps working."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "dev", group="lab")
        async with device_channel(state, server.agent_port) as dev:
            base = {"v": 1, "type": "request.open", "local_id": "3" * 32, "summary": "Printer"}
            bad: list[dict[str, Any]] = [
                {**base, "local_id": "../../etc"}, {**base, "summary": "x" * 201}, {**base, "summary": ""},
                {**base, "urgency": "panic"}, {**base, "details": "d" * 4001},
                {**base, "diagnostics": [{"code": "c", "severity": "info", "text": "t"}] * 33},
                {**base, "screenshot": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * (2 * 1024 * 1024)).decode()},
                {**base, "extra": 1},
            ]
            for i, message in enumerate(bad):
                await dev.send_raw({**message, "id": f"bad{i}"})
                error = await dev.wait_for(partial(is_error_for, f"bad{i}"), what=f"error for bad{i}")
                assert error["code"] == "invalid", error
            await dev.send(RequestOpen(local_id="4" * 32, summary="not a png", screenshot=b"GIF89a-not-png"))
            await dev.wait_for(lambda m: m.get("type") == "error" and "PNG" in m.get("message", ""), what="PNG error")
            await dev.send(RequestAdd(id="add1", local_id="5" * 32, text="hello"))
            missing = await dev.wait_for(lambda m: m.get("in_reply_to") == "add1", what="unknown local id")
            assert missing["code"] == "not_found"
            assert await server.db.fetchall("SELECT id FROM support_requests") == []
            await dev.send(RequestOpen(local_id="3" * 32, summary="Printer"))
            await dev.status(state="waiting", number=1)
            # At most 20 open requests per device; a resend of an existing one is still answered.
            for n in range(2, 21):
                await dev.send(RequestOpen(local_id=f"{n:032x}", summary=f"request {n}"))
            await dev.status(state="waiting", number=20)
            await dev.send(RequestOpen(id="over", local_id="f" * 32, summary="one too many"))
            over = await dev.wait_for(partial(is_error_for, "over"), what="too_many")
            assert over["code"] == "too_many"
            mark = len(dev.received)
            await dev.send(RequestOpen(local_id="3" * 32, summary="Printer"))
            await dev.status(after=mark, number=1)


async def test_session_from_request_names_it_in_the_offer(tmp_path: Path) -> None:
    """POST …/sessions with request_id: the device's offer says "About your request #1: …"; the request is claimed,
    first_session_at set, a 'session' event written, the session row linked; another device's request is refused."""
    async with running_server(tmp_path / "srv") as server:
        await make_user(server, "tess", "technician", groups={"lab": Right.REMOTE_VIEW | Right.VIEW_INVENTORY})
        tess = await admin.create_token(server.db, "tess", "t", None, actor="test")
        state = await enroll_agent(server, tmp_path / "dev", group="lab")
        other = await enroll_agent(server, tmp_path / "dev2", group="lab")
        async with device_channel(state, server.agent_port) as dev, \
                client(server, Authorization=f"Bearer {tess.token}") as http:
            await dev.send(RequestOpen(local_id="6" * 32, summary="Printer offline"))
            rid = (await dev.status(state="waiting"))["request_id"]
            status, refused = await call(http, "POST", f"/api/v1/devices/{other.device_id}/sessions",
                                         {"mode": "view", "request_id": rid})
            assert status == 404, refused
            started = time.time()
            status, session = await call(http, "POST", f"/api/v1/devices/{state.device_id}/sessions",
                                         {"mode": "view", "request_id": rid})
            assert status == 201, session
            offer = await dev.wait_for(lambda m: m.get("type") == "session.offer", what="session.offer")
            assert offer["reason"] == "About your request #1: Printer offline"
            await dev.status(rid, state="claimed", claimed_by="tess")
            row = await server.db.fetchone("SELECT * FROM support_requests WHERE id = ?", (rid,))
            assert row is not None and row["first_session_at"] >= started and row["claimed_by"] == "tess"
            linked = await server.db.fetchone("SELECT request_id FROM sessions WHERE id = ?", (session["session_id"],))
            assert linked == {"request_id": rid}
            kinds = [r["kind"] for r in await server.db.fetchall(
                "SELECT kind FROM support_request_events WHERE request_id = ? ORDER BY id", (rid,))]
            assert kinds == ["created", "claimed", "session"]


async def test_live_feed_and_escalation_to_another_group(tmp_path: Path) -> None:
    """The live websocket gives a snapshot of the caller's groups, then updates; escalating to another group
    removes the request from a page that cannot see that group and shows it on that group's page."""
    async with running_server(tmp_path / "srv") as server:
        await make_user(server, "tess", "technician", groups={"lab": None})
        await make_user(server, "olly", "technician", groups={"other": None})
        lead = await make_user(server, "lead", "technician")
        await admin.assign_rights(server.db, lead.user_id, "lab", None, actor="test")
        await admin.assign_rights(server.db, lead.user_id, "other", Right.VIEW_INVENTORY, actor="test")
        tess = await admin.create_token(server.db, "tess", "t", None, actor="test")
        olly = await admin.create_token(server.db, "olly", "t", None, actor="test")
        lead_token = await admin.create_token(server.db, "lead", "t", None, actor="test")
        state = await enroll_agent(server, tmp_path / "dev", group="lab")
        origin = {"Origin": console_url(server)}
        async with device_channel(state, server.agent_port) as dev, \
                client(server, Authorization=f"Bearer {tess.token}") as http, \
                client(server, Authorization=f"Bearer {olly.token}") as other, \
                client(server, Authorization=f"Bearer {lead_token.token}") as lead_http, \
                http.ws_connect("/api/v1/requests/live", headers=origin) as lab_ws, \
                other.ws_connect("/api/v1/requests/live", headers=origin) as other_ws:
            assert (await lab_ws.receive_json(timeout=10)) == {"type": "snapshot", "requests": []}
            assert (await other_ws.receive_json(timeout=10)) == {"type": "snapshot", "requests": []}
            await dev.send(RequestOpen(local_id="7" * 32, summary="Needs the finance share", screenshot=PNG_1PX))
            rid = (await dev.status(state="waiting"))["request_id"]
            update = await lab_ws.receive_json(timeout=10)
            assert update["type"] == "update" and update["kind"] == "created" and update["request"]["id"] == rid
            status, body = await call(http, "POST", f"/api/v1/requests/{rid}/escalate", {"group": "nowhere"})
            assert status == 400, body
            # tess has no right on "other": she cannot hand the request (and the user's screenshot) to it.
            status, body = await call(http, "POST", f"/api/v1/requests/{rid}/escalate", {"group": "other"})
            assert status == 403 and body["error"]["code"] == "forbidden", body
            assert (await server.db.fetchone("SELECT group_name FROM support_requests WHERE id = ?",
                                             (rid,))) == {"group_name": "lab"}
            status, body = await call(lead_http, "POST", f"/api/v1/requests/{rid}/escalate",
                                      {"group": "other", "notes": "finance owns it"})
            assert status == 200 and body["group_name"] == "other" and body["escalated"], body
            assert (await lab_ws.receive_json(timeout=10)) == {"type": "removed", "id": rid}
            moved = await other_ws.receive_json(timeout=10)
            assert moved["kind"] == "escalated" and moved["request"]["group_name"] == "other"
            assert (await call(http, "POST", f"/api/v1/requests/{rid}/claim"))[0] == 404  # no longer tess's group
            # A session "from" the request would claim it in "other", where tess has no right.
            status, body = await call(http, "POST", f"/api/v1/devices/{state.device_id}/sessions",
                                      {"mode": "view", "request_id": rid})
            assert status == 404, body
            assert (await server.db.fetchone("SELECT state FROM support_requests WHERE id = ?",
                                             (rid,))) == {"state": "waiting"}
            # olly has rights on "other", none on the device's group: the screenshot stays the device group's.
            status, body = await call(other, "GET", f"/api/v1/requests/{rid}/screenshot")
            assert status == 404, body
            assert (await call(other, "POST", f"/api/v1/requests/{rid}/claim"))[0] == 200


async def test_resolved_list_newest_first_paged_and_since(tmp_path: Path) -> None:
    """GET /api/v1/requests?state=resolved: newest first, `limit`/`offset` with `next_offset`, `resolved_since`."""
    async with running_server(tmp_path / "srv") as server:
        await make_user(server, "tess", "technician", groups={"lab": None})
        tess = await admin.create_token(server.db, "tess", "t", None, actor="test")
        state = await enroll_agent(server, tmp_path / "dev", group="lab")
        async with device_channel(state, server.agent_port) as dev, \
                client(server, Authorization=f"Bearer {tess.token}") as http:
            rids = []
            for i in range(3):
                await dev.send(RequestOpen(local_id=f"{i + 1:032x}", summary=f"r{i}"))
                rid = (await dev.status(state="waiting", local_id=f"{i + 1:032x}"))["request_id"]
                assert (await call(http, "POST", f"/api/v1/requests/{rid}/resolve", {"category": "x"}))[0] == 200
                rids.append(rid)
            await server.db.execute("UPDATE support_requests SET resolved_at = ? WHERE id = ?",
                                    (time.time() - 8 * 86400, rids[0]))
            status, page = await call(http, "GET", "/api/v1/requests?state=resolved&limit=2")
            assert status == 200 and [r["id"] for r in page["requests"]] == [rids[2], rids[1]], page
            assert page["next_offset"] == 2
            status, page = await call(http, "GET", "/api/v1/requests?state=resolved&limit=2&offset=2")
            assert [r["id"] for r in page["requests"]] == [rids[0]] and "next_offset" not in page, page
            since = int(time.time() - 7 * 86400)
            status, page = await call(http, "GET", f"/api/v1/requests?state=resolved&resolved_since={since}")
            assert [r["id"] for r in page["requests"]] == [rids[2], rids[1]], page
            assert (await call(http, "GET", "/api/v1/requests?limit=501"))[0] == 400


async def test_a_rights_change_closes_the_users_queue_socket(tmp_path: Path) -> None:
    """The queue socket's groups are fixed at connect: a change of the user's rights closes it (4403), so the page
    reconnects with the new ones; another user's socket stays open."""
    async with running_server(tmp_path / "srv") as server:
        tess = await make_user(server, "tess", "technician", groups={"lab": None})
        await make_user(server, "olly", "technician", groups={"other": None})
        tess_token = await admin.create_token(server.db, "tess", "t", None, actor="test")
        olly_token = await admin.create_token(server.db, "olly", "t", None, actor="test")
        # The rights events of creating the two users must be handled before the sockets open: handled after
        # (a loaded machine, PostgreSQL), they close the fresh sockets and the test would see that instead.
        row = await server.db.fetchone("SELECT COALESCE(MAX(seq), 0) AS seq FROM events")
        assert row is not None and server.watcher is not None
        newest, watcher = int(row["seq"]), server.watcher
        await wait_until(lambda: watcher.last_seq >= newest, timeout=30, what="the user events handled")
        origin = {"Origin": console_url(server)}
        async with client(server, Authorization=f"Bearer {tess_token.token}") as http, \
                client(server, Authorization=f"Bearer {olly_token.token}") as other, \
                http.ws_connect("/api/v1/requests/live", headers=origin) as ws, \
                other.ws_connect("/api/v1/requests/live", headers=origin) as other_ws:
            assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
            assert (await other_ws.receive_json(timeout=10))["type"] == "snapshot"
            await admin.assign_rights(server.db, tess.user_id, "lab", Right.VIEW_INVENTORY, actor="test")
            closed = await ws.receive(timeout=15)
            assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4403, closed
            assert not other_ws.closed
