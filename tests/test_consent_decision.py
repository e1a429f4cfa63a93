"""The agent's consent decision on its own: local policy → grant → prompt, for new sessions and upgrades.

Pure inputs, no agent, no network: each row names a request, the local policy, what the grant
book holds and whether anybody can be asked, and the verdict the rule must give.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from agent.consent.decision import (
    VIEW_ONLY_NOTE,
    ConsentDecision,
    ConsentRequest,
    GrantFacts,
    Verdict,
    decide,
)
from agent.consent.ui import PromptAnswer
from agent.policy import LocalPolicy
from protocol.grants import Grant, Window
from protocol.session import AnsweredBy, Mode

NOW = 1_700_000_000.0
LOCAL = datetime(2024, 1, 1, 12, 0)  # a Monday, noon
DEVICE, GROUP = "dev-1", "lab"
NOBODY = "nobody is logged in to ask for consent"
NO_DISPLAY = "no display to show the consent prompt on"

DEFAULT = LocalPolicy()
NO_CONTROL = LocalPolicy(allow_control=False)
NO_UNATTENDED = LocalPolicy(allow_unattended=False)
ALWAYS_ASK = LocalPolicy(require_prompt=True, prompt_timeout_s=12)
BROKEN = LocalPolicy(allow_control=False, allow_unattended=False, require_prompt=True, broken="not valid TOML")


def grant(actions: list[str] | None = None, **changes: object) -> Grant:
    fields: dict[str, object] = dict(grant_id="grant-0001", groups=[GROUP], technicians=["ann"],
                                     actions=actions or ["view"], not_before=NOW - 60, not_after=NOW + 3600,
                                     issuer="root", issued_at=NOW - 60)
    fields.update(changes)
    return Grant(**fields)  # type: ignore[arg-type]


def held(g: Grant | None, *, revoked: bool = False) -> GrantFacts:
    return GrantFacts(grant=g, revoked=revoked, device_id=DEVICE, group=GROUP)


VIEW_GRANT = held(grant(["view"]))
CONTROL_GRANT = held(grant(["view", "control"]))


def new(mode: Mode, grant_id: str | None = None) -> ConsentRequest:
    return ConsentRequest(session_id="s-1", technician="Ann Smith", technician_user="ann",
                          technician_role="technician", mode=mode, reason="printer", grant_id=grant_id)


def upgrade(current: Mode, mode: Mode, grant_id: str | None = None) -> ConsentRequest:
    return ConsentRequest(session_id="s-1", technician="Ann Smith", technician_user="ann",
                          technician_role="technician", mode=mode, reason="need the mouse", grant_id=grant_id,
                          current_mode=current)


@dataclass(frozen=True)
class Case:
    name: str
    request: ConsentRequest
    policy: LocalPolicy
    verdict: Verdict
    by: AnsweredBy
    mode: Mode | None = None
    reason: str = ""
    facts: GrantFacts | None = None
    nobody: str = ""
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)


CASES = [
    # --- new sessions, attended --------------------------------------------------------------------
    Case("view asks the user", new("view"), DEFAULT, Verdict.ASK_USER, "user", "view"),
    Case("control asks the user", new("control"), DEFAULT, Verdict.ASK_USER, "user", "control"),
    Case("policy forbids control: ask for view, say why", new("control"), NO_CONTROL, Verdict.ASK_USER, "user",
         "view", note=VIEW_ONLY_NOTE),
    Case("broken policy refuses", new("view"), BROKEN, Verdict.DENY, "policy", reason="local policy unusable"),
    Case("nobody logged in", new("view"), DEFAULT, Verdict.DENY, "unavailable", reason=NOBODY, nobody=NOBODY),
    Case("no display", new("control"), DEFAULT, Verdict.DENY, "unavailable", reason=NO_DISPLAY, nobody=NO_DISPLAY),
    # --- new sessions under a grant ----------------------------------------------------------------
    Case("valid grant starts without asking, nobody there", new("view", "grant-0001"), DEFAULT,
         Verdict.ALLOW_BY_GRANT, "grant", "view", "allowed by grant", VIEW_GRANT, NOBODY),
    Case("control grant allows control", new("control", "grant-0001"), DEFAULT, Verdict.ALLOW_BY_GRANT, "grant",
         "control", facts=CONTROL_GRANT),
    Case("grant for the wrong mode", new("control", "grant-0001"), DEFAULT, Verdict.DENY, "grant",
         reason="grant refused: grant does not allow 'control'", facts=VIEW_GRANT),
    Case("policy's view-only makes a view grant enough", new("control", "grant-0001"), NO_CONTROL,
         Verdict.ALLOW_BY_GRANT, "grant", "view", facts=VIEW_GRANT),
    Case("expired grant", new("view", "grant-0001"), DEFAULT, Verdict.DENY, "grant", reason="grant has expired",
         facts=held(grant(not_before=NOW - 7200, not_after=NOW - 3600))),
    Case("grant not valid yet", new("view", "grant-0001"), DEFAULT, Verdict.DENY, "grant",
         reason="not valid yet", facts=held(grant(not_before=NOW + 60, not_after=NOW + 3600))),
    Case("expires at exactly now", new("view", "grant-0001"), DEFAULT, Verdict.DENY, "grant",
         reason="grant has expired", facts=held(grant(not_after=NOW))),
    Case("revoked grant", new("view", "grant-0001"), DEFAULT, Verdict.DENY, "grant", reason="revoked",
         facts=held(grant(), revoked=True)),
    Case("grant not in the book", new("view", "grant-0001"), DEFAULT, Verdict.DENY, "grant",
         reason="no valid grant 'grant-0001'", facts=held(None)),
    Case("no facts at all for a named grant", new("view", "grant-0001"), DEFAULT, Verdict.DENY, "grant",
         reason="no valid grant"),
    Case("grant names another technician", new("view", "grant-0001"), DEFAULT, Verdict.DENY, "grant",
         reason="does not name technician 'ann'", facts=held(grant(technicians=["bob"]))),
    Case("grant for another group", new("view", "grant-0001"), DEFAULT, Verdict.DENY, "grant",
         reason="does not cover this device", facts=held(grant(groups=["office"]))),
    Case("outside the grant's window", new("view", "grant-0001"), DEFAULT, Verdict.DENY, "grant",
         reason="outside the grant's time windows",
         facts=held(grant(windows=[Window(days=[0], start="22:00", end="06:00")]))),
    Case("inside the grant's window", new("view", "grant-0001"), DEFAULT, Verdict.ALLOW_BY_GRANT, "grant", "view",
         facts=held(grant(windows=[Window(days=[0], start="11:00", end="13:00")]))),
    Case("policy forbids unattended", new("view", "grant-0001"), NO_UNATTENDED, Verdict.DENY, "policy",
         reason="unattended access is forbidden", facts=VIEW_GRANT),
    Case("broken policy refuses a valid grant", new("view", "grant-0001"), BROKEN, Verdict.DENY, "policy",
         reason="local policy unusable", facts=VIEW_GRANT),
    Case("policy requires a prompt even under a grant", new("view", "grant-0001"), ALWAYS_ASK, Verdict.ASK_USER,
         "user", "view", facts=VIEW_GRANT),
    Case("required prompt, grant, nobody there", new("view", "grant-0001"), ALWAYS_ASK, Verdict.DENY,
         "unavailable", reason=NOBODY, facts=VIEW_GRANT, nobody=NOBODY),
    Case("required prompt does not rescue a bad grant", new("view", "grant-0001"), ALWAYS_ASK, Verdict.DENY,
         "grant", reason="expired", facts=held(grant(not_after=NOW - 1))),
    # --- upgrades of a running session ---------------------------------------------------------------
    Case("upgrade asks again", upgrade("view", "control"), DEFAULT, Verdict.ASK_USER, "user", "control"),
    Case("upgrade to the same mode changes nothing", upgrade("control", "control"), DEFAULT, Verdict.UNCHANGED,
         "policy", "control", "already in this mode"),
    Case("upgrade refused by policy, not downgraded", upgrade("view", "control"), NO_CONTROL, Verdict.DENY,
         "policy", reason="control is forbidden by this device's policy"),
    Case("upgrade with a broken policy", upgrade("view", "control"), BROKEN, Verdict.DENY, "policy",
         reason="local policy unusable"),
    Case("upgrade with nobody to ask", upgrade("view", "control"), DEFAULT, Verdict.DENY, "unavailable",
         reason=NOBODY, nobody=NOBODY),
    Case("upgrade under a control grant", upgrade("view", "control", "grant-0001"), DEFAULT,
         Verdict.ALLOW_BY_GRANT, "grant", "control", facts=CONTROL_GRANT, nobody=NOBODY),
    Case("upgrade under a view-only grant", upgrade("view", "control", "grant-0001"), DEFAULT, Verdict.DENY,
         "grant", reason="does not allow 'control'", facts=VIEW_GRANT),
    Case("upgrade after the grant was revoked", upgrade("view", "control", "grant-0001"), DEFAULT, Verdict.DENY,
         "grant", reason="revoked", facts=held(None, revoked=True)),
    Case("upgrade after the grant expired", upgrade("view", "control", "grant-0001"), DEFAULT, Verdict.DENY,
         "grant", reason="expired", facts=held(grant(["view", "control"], not_after=NOW - 1))),
    Case("upgrade under a grant, prompt required", upgrade("view", "control", "grant-0001"), ALWAYS_ASK,
         Verdict.ASK_USER, "user", "control", facts=CONTROL_GRANT),
    Case("upgrade under a grant, unattended now forbidden", upgrade("view", "control", "grant-0001"), NO_UNATTENDED,
         Verdict.DENY, "policy", reason="unattended access is forbidden", facts=CONTROL_GRANT),
]


def _decide(case: Case) -> ConsentDecision:
    return decide(case.request, case.policy, grant=case.facts, nobody_to_ask=case.nobody, now=NOW, local=LOCAL)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decision_table(case: Case) -> None:
    """Each row: the verdict, who decided, the mode, the reason, and (when asking) what the prompt says."""
    decision = _decide(case)
    assert (decision.verdict, decision.by, decision.mode) == (case.verdict, case.by, case.mode), decision
    assert case.reason in decision.reason
    assert decision.accepted == (case.verdict in (Verdict.ALLOW_BY_GRANT, Verdict.UNCHANGED))
    if case.verdict is Verdict.ALLOW_BY_GRANT:
        assert case.facts is not None and decision.grant is case.facts.grant
    if case.verdict is Verdict.ASK_USER:
        prompt = decision.prompt
        assert prompt is not None
        assert (prompt.technician, prompt.mode, prompt.reason) == ("Ann Smith", case.mode, case.request.reason)
        assert prompt.upgrade == case.request.upgrade and prompt.note == case.note
        assert prompt.timeout_s == case.policy.prompt_timeout_s
        # An attended prompt carries no grant; a required prompt under a grant keeps it for the session.
        assert decision.grant is (case.facts.grant if case.facts is not None else None)
    else:
        assert decision.prompt is None


def test_answers_decide_a_prompt() -> None:
    """Allow grants exactly the prompt's mode (view when policy downgraded control); Deny/timeout refuse."""
    asked = decide(new("control"), NO_CONTROL, grant=None, nobody_to_ask="", now=NOW, local=LOCAL)
    allowed = asked.answered(PromptAnswer(True, "user", "allowed by the user"))
    assert (allowed.verdict, allowed.by, allowed.mode, allowed.accepted) == (Verdict.ALLOW_BY_USER, "user", "view",
                                                                             True)
    denied = asked.answered(PromptAnswer(False, "user", "denied by the user"))
    assert (denied.verdict, denied.by, denied.mode, denied.accepted) == (Verdict.DENY, "user", None, False)
    timed_out = asked.answered(PromptAnswer(False, "timeout", "no answer to the consent prompt"))
    assert (timed_out.verdict, timed_out.by, timed_out.reason) == (Verdict.DENY, "timeout",
                                                                   "no answer to the consent prompt")
    under_grant = decide(new("view", "grant-0001"), ALWAYS_ASK, grant=VIEW_GRANT, nobody_to_ask="", now=NOW,
                         local=LOCAL).answered(PromptAnswer(True, "user", "allowed by the user"))
    assert under_grant.accepted and under_grant.grant is VIEW_GRANT.grant  # the session stays bound to its grant


def test_only_a_prompt_can_be_answered() -> None:
    """Answering a verdict that asked nobody is a programming error, not a silent Allow."""
    by_grant = decide(new("view", "grant-0001"), DEFAULT, grant=VIEW_GRANT, nobody_to_ask="", now=NOW, local=LOCAL)
    refused = decide(new("view"), BROKEN, grant=None, nobody_to_ask="", now=NOW, local=LOCAL)
    for decision in (by_grant, refused):
        with pytest.raises(ValueError, match="nothing was asked"):
            decision.answered(PromptAnswer(True, "user", "allowed"))


POLICIES = [DEFAULT, NO_CONTROL, NO_UNATTENDED, ALWAYS_ASK, BROKEN, LocalPolicy(allow_control=False,
                                                                                 require_prompt=True)]
FACTS: list[GrantFacts | None] = [None, VIEW_GRANT, CONTROL_GRANT, held(None), held(grant(), revoked=True),
                                  held(grant(["view", "control"], not_after=NOW - 1))]
GRANT_IDS = [None, "grant-0001"]


def _every_input() -> list[tuple[LocalPolicy, GrantFacts | None, str | None, str]]:
    return list(itertools.product(POLICIES, FACTS, GRANT_IDS, ["", NOBODY]))


def test_view_consent_never_yields_control() -> None:
    """Over every combination: a request for view, or control where the policy forbids it, is never granted
    control — not by the grant, not after the user's Allow."""
    for policy, facts, grant_id, nobody in _every_input():
        for request in (new("view", grant_id), upgrade("view", "view", grant_id),
                        *([new("control", grant_id), upgrade("view", "control", grant_id)]
                          if not policy.allow_control else [])):
            decision = decide(request, policy, grant=facts, nobody_to_ask=nobody, now=NOW, local=LOCAL)
            if decision.verdict is Verdict.ASK_USER:
                decision = decision.answered(PromptAnswer(True, "user", "allowed"))
            assert decision.mode != "control", (request, policy, facts, decision)


def test_attended_upgrade_always_needs_a_fresh_prompt() -> None:
    """Over every combination: upgrading an attended session to control is never allowed without asking again,
    and the prompt says it is an upgrade."""
    for policy, facts, _grant_id, nobody in _every_input():
        decision = decide(upgrade("view", "control"), policy, grant=facts, nobody_to_ask=nobody, now=NOW,
                          local=LOCAL)
        assert decision.verdict in (Verdict.ASK_USER, Verdict.DENY), (policy, facts, decision)
        if decision.prompt is not None:
            assert decision.prompt.upgrade and decision.prompt.mode == "control"


def test_nobody_there_never_reaches_a_prompt() -> None:
    """Over every combination: with nobody to ask, the verdict is never ASK_USER (no prompt on an empty desk)."""
    for policy, facts, grant_id, _nobody in _every_input():
        for request in (new("view", grant_id), new("control", grant_id), upgrade("view", "control", grant_id)):
            decision = decide(request, policy, grant=facts, nobody_to_ask=NOBODY, now=NOW, local=LOCAL)
            assert decision.verdict is not Verdict.ASK_USER


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(verdict=Verdict.DENY, by="policy", reason="x", mode="view"), "no mode"),
    (dict(verdict=Verdict.ALLOW_BY_USER, by="user", reason="x"), "needs a mode"),
    (dict(verdict=Verdict.ALLOW_BY_GRANT, by="grant", reason="x", mode="view"), "needs the grant"),
    (dict(verdict=Verdict.ASK_USER, by="user", reason="x", mode="view"), "needs one"),
])
def test_decisions_cannot_be_built_inconsistent(kwargs: dict[str, object], message: str) -> None:
    """A refusal with a mode, an allow without one, a grant verdict without a grant, a question without a prompt."""
    with pytest.raises(ValueError, match=message):
        ConsentDecision(**kwargs)  # type: ignore[arg-type]


def test_prompt_mode_must_match_the_granted_mode() -> None:
    """An ASK_USER whose prompt asks about view cannot grant control."""
    asked = decide(new("view"), DEFAULT, grant=None, nobody_to_ask="", now=NOW, local=LOCAL)
    with pytest.raises(ValueError, match="mode that would be granted"):
        ConsentDecision(Verdict.ASK_USER, "user", "x", "control", None, asked.prompt)
