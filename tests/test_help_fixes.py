"""Tier 0 self-service from the Get help window (issue 18): a signed fix runs, fails, escalates; its budget holds.

A real server holds an org's root and a SelfServiceFix two approvers signed for this device; the agent
(direct mode, its pin the org root) verifies it and offers it in the window of ``helpline help`` on a real
Xvfb, clicked with xdotool. The fix restarts a service that does not exist, so it fails for real; *Ask IT
about it* sends a request with the attempt attached (escalated at the server); a second run is refused by
the signed budget (one run per hour) and runs nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.help.local_socket import SOCKET_NAME
from agent.help.window import ESCALATE_BG, RUN_BG, TITLE
from protocol.authority import ParamLimit, RunBudget, SelfServiceFix
from server import audit
from tests.authority_helpers import make_org, publish, submit
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_help_request import _events, help_window, next_event, requests_of, short_dir
from tests.test_session_helpers import api, click_colour, install_test_auth, wait_for_audit, wait_window
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

SERVICE = "helpline-no-such-printer.service"


def fix_body(device_id: str) -> SelfServiceFix:
    now = time.time()
    return SelfServiceFix(
        fix_id="fix-printer", title="Restart the printer service", action="restart_service",
        params={"name": ParamLimit(type="str", choices=[SERVICE], required=True)},
        budget=RunBudget(max_runs=1, per_seconds=3600), devices=[device_id], not_before=now - 60,
        not_after=now + 3600, issuer="Alice", issued_at=now)


async def test_a_fix_fails_escalates_with_the_attempt_and_its_budget_holds(tmp_path: Path,
                                                                          xvfb: XvfbHandle) -> None:  # noqa: F811
    """Run → fails (a real systemctl on a unit that does not exist) → fix.run audited at the server, fix.ran on
    the device → *Ask IT about it* → a request with the attempt, escalated; the second run is refused by the
    signed budget (fix.refused on the device; nothing more ran)."""
    org = make_org()
    with short_dir() as state_dir:
        async with running_server(tmp_path / "server") as server:
            install_test_auth(server)
            await publish(server, org)
            state = await enroll_agent(server, state_dir / "agent")
            await submit(server, org.sign("fix", fix_body(state.device_id)))
            config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, trust_root_sha256=org.root.fingerprint)
            async with running_agent(state, config) as agent:
                desk = agent.parts.help
                assert desk is not None
                await wait_until(lambda: [f.fix_id for f in desk.fixes.offered()] == ["fix-printer"], timeout=30,
                                 what="the signed fix verified on the device")
                sock = state.directory / SOCKET_NAME
                await wait_until(sock.exists, timeout=10, what="help socket")
                with help_window(sock, xvfb.display, "--no-screenshot") as proc:
                    events = _events(proc)
                    ready = await next_event(events, "ready", 60)
                    assert ready["fixes"] == ["fix-printer"]
                    await wait_window(xvfb.display, TITLE, timeout=30)
                    await click_colour(xvfb.display, RUN_BG, timeout=30)
                    ran = await next_event(events, "fix", 120)
                    assert ran["ok"] is False and ran["fix_id"] == "fix-printer", ran
                    record = await wait_for_audit(server, "fix.run", timeout=15)
                    assert record["target"] == "fix-printer"

                    await click_colour(xvfb.display, ESCALATE_BG)
                    await next_event(events, "sent")
                    found: list[dict[str, Any]] = []

                    async def arrived() -> bool:
                        found[:] = await requests_of(server)
                        return bool(found)

                    await wait_until(arrived, timeout=15, what="the escalated request")
                    status, request = await api(server, "GET", f"/api/v1/requests/{found[0]['id']}", "root")
                    assert status == 200, request
                    assert request["escalated"] is True
                    assert request["attempt"]["fix_id"] == "fix-printer"
                    assert request["attempt"]["outcome"] == "failed"
                    assert request["summary"] == "Restart the printer service: did not fix my problem"

                    await click_colour(xvfb.display, RUN_BG)
                    again = await next_event(events, "fix", 60)
                    assert again["ok"] is False and "run budget used up" in again["detail"], again
                device_events = [e["event"] for e in agent.parts.authority.store.audit.entries()
                                 if e["event"].startswith("fix.")]
                assert device_events == ["fix.allowed", "fix.ran", "fix.refused"]
                runs = await audit.recent(server.db, limit=50, action="fix.run")
                assert len(runs) == 1

