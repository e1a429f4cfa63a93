"""After the user declines, the same technician meets a cooldown on the device (issue 11, "also fix").

A technician could repeat a request the user had just denied until the user gave in. The rule
lives in the pure decision (:func:`agent.consent.decision.cooldown_refusal`, applied by
:func:`~agent.consent.decision.decide` before any prompt); the agent's session manager records
when the user declined whom (Deny or no answer) and passes the age in. Table tests for the rule,
then the manager with a scripted prompt and a clock the test moves.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.consent.decision import ConsentRequest, Verdict, cooldown_refusal, decide
from agent.consent.scripted import ScriptedConsentUI
from agent.control_client import AgentClient
from agent.policy import LocalPolicy, PolicyError
from agent.sessions import AgentSessions
from agent.state import AgentState
from protocol.session import Mode, SessionOffer


@pytest.mark.parametrize(("ago", "cooldown", "reason"), [
    (None, 60, None),
    (0.0, 60, "the user declined 0 s ago; try again in 60 s"),
    (12.3, 60, "the user declined 12 s ago; try again in 48 s"),
    (59.5, 60, "the user declined 59 s ago; try again in 1 s"),
    (60.0, 60, None),
    (3600.0, 60, None),
    (5.0, 0, None),
    (-30.0, 60, "the user declined 0 s ago; try again in 60 s"),
    (math.nan, 60, "the user declined 0 s ago; try again in 60 s"),
])
def test_cooldown_rule(ago: float | None, cooldown: float, reason: str | None) -> None:
    """Refused with how long ago and how long to wait while the last "no" is younger than the cooldown."""
    refusal = cooldown_refusal(ago, cooldown)
    if reason is None:
        assert refusal is None
    else:
        assert refusal is not None and refusal.verdict is Verdict.DENY and refusal.by == "policy"
        assert refusal.reason == reason


def _request(mode: Mode = "control", current: Mode | None = None, user: str = "ann") -> ConsentRequest:
    return ConsentRequest(session_id="s-1", technician="Ann Smith", technician_user=user,
                          technician_role="technician", mode=mode, reason="printer", current_mode=current)


@dataclass(frozen=True)
class Case:
    name: str
    request: ConsentRequest
    policy: LocalPolicy
    declined_ago: float | None
    verdict: Verdict
    nobody: str = ""


CASES = [
    Case("never declined: ask", _request(), LocalPolicy(), None, Verdict.ASK_USER),
    Case("declined 10 s ago: refused, no prompt", _request(), LocalPolicy(), 10.0, Verdict.DENY),
    Case("an upgrade too", _request("control", "view"), LocalPolicy(), 10.0, Verdict.DENY),
    Case("declined long ago: ask", _request(), LocalPolicy(), 61.0, Verdict.ASK_USER),
    Case("the device's own cooldown", _request(), LocalPolicy(decline_cooldown_s=300), 120.0, Verdict.DENY),
    Case("cooldown off", _request(), LocalPolicy(decline_cooldown_s=0), 1.0, Verdict.ASK_USER),
    Case("nothing to consent to", _request("view", "view"), LocalPolicy(), 1.0, Verdict.UNCHANGED),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide_applies_the_cooldown_before_any_prompt(case: Case) -> None:
    """decide() refuses a recently declined technician before building a prompt; otherwise unchanged."""
    decision = decide(case.request, case.policy, document=None, nobody_to_ask=case.nobody,
                      declined_ago=case.declined_ago)
    assert decision.verdict is case.verdict
    if case.verdict is Verdict.DENY:
        assert decision.prompt is None and decision.by == "policy"
        assert decision.reason.startswith("the user declined ") and "try again in " in decision.reason


def test_policy_reads_and_checks_the_cooldown() -> None:
    """decline_cooldown_s comes from the device admin's policy file: 60 by default, 0 switches it off."""
    assert LocalPolicy().decline_cooldown_s == 60
    assert LocalPolicy.parse("decline_cooldown_s = 0").decline_cooldown_s == 0
    assert LocalPolicy.parse("decline_cooldown_s = 90.5").decline_cooldown_s == 90.5
    for bad in ("-1", "nan", "inf", "true", '"60"', "100000"):
        with pytest.raises(PolicyError):
            LocalPolicy.parse(f"decline_cooldown_s = {bad}")


class SteppedClock:
    """Wall time the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def wall(self) -> float:
        return self.now

    def local(self) -> datetime:
        return datetime.fromtimestamp(self.now)


def _offer(user: str, session_id: str) -> SessionOffer:
    return SessionOffer(session_id=session_id, technician=user.title(), technician_user=user,
                        technician_role="technician", mode="view", tunnel_token="t" * 43, reason="printer")


async def test_manager_refuses_a_declined_technician_without_a_prompt_until_the_cooldown_ends(
        tmp_path: Path) -> None:
    """The user denies ann: ann's next request 30 s later is refused at once (no prompt shown) with the wait;
    bob is still asked; after 60 s ann is asked again. A prompt that times out starts the cooldown too."""
    state = AgentState(tmp_path)
    state.save_info({"device_id": "dev-1", "agent_url": "wss://server.example:8443/agent"})
    ui = ScriptedConsentUI([False, True, True])
    clock = SteppedClock(1_700_000_000.0)
    manager = AgentSessions(AgentClient(state, AgentConfig(state_dir=tmp_path)), ui=ui, clock=clock,
                            display=":99", logged_in=lambda: ["user"])
    policy = LocalPolicy(prompt_timeout_s=0.01)

    first = await manager.decide(_offer("ann", "s-1"), policy)
    assert not first.accepted and first.by == "user" and len(ui.requests) == 1
    clock.now += 30
    again = await manager.decide(_offer("ann", "s-2"), policy)
    assert not again.accepted and again.by == "policy" and len(ui.requests) == 1
    assert again.reason == "the user declined 30 s ago; try again in 30 s"
    other = await manager.decide(_offer("bob", "s-3"), policy)
    assert other.accepted and len(ui.requests) == 2
    clock.now += 30
    later = await manager.decide(_offer("ann", "s-4"), policy)
    assert later.accepted and len(ui.requests) == 3
    # Nobody answers (the scripted queue is empty): the timeout counts as a "no" as well.
    timed_out = await asyncio.wait_for(manager.decide(_offer("bob", "s-5"), policy), 5)
    assert timed_out.by == "timeout"
    clock.now += 1
    assert (await manager.decide(_offer("bob", "s-6"), policy)).by == "policy" and len(ui.requests) == 4
