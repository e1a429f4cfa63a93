"""Per-device rate limits on support-request messages, on a real server over the real mTLS channel: an open →
withdraw loop stops at the hourly limit of new requests, a note flood at the per-minute limit, and a flood of
fix outcomes writes a few audit records plus one aggregate, not one hash-chained record each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from protocol.requests import FixOutcome, RequestAdd, RequestOpen, RequestWithdraw
from server.requests.device_limits import LIMITS
from tests.harness import enroll_agent, running_server
from tests.requests_helpers import PNG_1PX, device_channel


def error_for(message_id: str) -> Any:
    return lambda m: m.get("type") == "error" and m.get("in_reply_to") == message_id


async def test_device_floods_are_refused(tmp_path: Path) -> None:
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "dev", group="lab")
        async with device_channel(state, server.agent_port) as dev:
            opens, _ = LIMITS["open"]
            for i in range(opens):
                local_id = f"{i:032x}"
                await dev.send(RequestOpen(local_id=local_id, summary="loop", screenshot=PNG_1PX))
                rid = (await dev.status(state="waiting", local_id=local_id))["request_id"]
                await dev.send(RequestWithdraw(local_id=local_id))
                await dev.status(rid, state="withdrawn")
            over = RequestOpen(local_id="f" * 32, summary="one too many", screenshot=PNG_1PX)
            await dev.send(over)
            refused = await dev.wait_for(error_for(over.id), what="the refusal of the open")
            assert refused["code"] == "rate_limited", refused
            count = await server.db.fetchone("SELECT COUNT(*) AS n FROM support_requests")
            assert count == {"n": opens}
            # A resend of a request already made is not a new one: still answered.
            await dev.send(RequestOpen(local_id=f"{0:032x}", summary="loop"))
            await dev.status(state="withdrawn", local_id=f"{0:032x}", after=len(dev.received))

            notes, _ = LIMITS["note"]
            adds = [RequestAdd(local_id=f"{1:032x}", text="n" * 4000) for _ in range(notes + 1)]
            for add in adds:
                await dev.send(add)
            refused = await dev.wait_for(error_for(adds[-1].id), what="the refusal of the note")
            assert refused["code"] == "rate_limited", refused
            await dev.ping()
            stored = await server.db.fetchone("SELECT COUNT(*) AS n FROM support_request_events WHERE kind = 'note'")
            # the first `notes` were looked at (refused as wrong_state: the request is withdrawn), none stored
            assert stored == {"n": 0}
            assert not [m for m in dev.received if m.get("type") == "error" and m.get("code") == "rate_limited"
                        and m.get("in_reply_to") in {a.id for a in adds[:-1]}]

            outcomes, _ = LIMITS["outcome"]
            sent = [FixOutcome(fix_id="clear-temp", title="Clear temp", ok=True) for _ in range(outcomes + 1)]
            for outcome in sent:
                await dev.send(outcome)
            refused = await dev.wait_for(error_for(sent[-1].id), what="the refusal of the outcome")
            assert refused["code"] == "rate_limited", refused
            await dev.ping()
        per_window = server.audit_throttle.per_window
        rows = await server.db.fetchall("SELECT details FROM audit_log WHERE action = 'fix.run'")
        assert len(rows) == per_window, rows
        await server.audit_throttle.flush(server.db, everything=True)  # the aggregate of the rest
        rows = await server.db.fetchall("SELECT details FROM audit_log WHERE action = 'fix.run' ORDER BY seq")
        assert len(rows) == per_window + 1, rows
        assert json.loads(rows[-1]["details"])["more"] == outcomes - per_window, rows[-1]
