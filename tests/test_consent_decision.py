"""The agent's consent decision on its own: local policy → signed grant and technician proof → prompt,
for new sessions and upgrades.

Pure inputs, no agent, no network: each row names a request, the local policy, what the device's
authority store found for the grant document (and the technician's proof), whether anybody can be
asked, and the verdict the rule must give.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from agent.consent.decision import (
    VIEW_ONLY_NOTE,
    ConsentDecision,
    ConsentRequest,
    DocumentFacts,
    Verdict,
    decide,
)
from agent.consent.ui import PromptAnswer
from agent.policy import LocalPolicy
from protocol.authority import UnattendedGrant
from protocol.session import AnsweredBy, Mode

NOW = 1_700_000_000.0
NOBODY = "nobody is logged in to ask for consent"
NO_DISPLAY = "no display to show the consent prompt on"
APPROVED = "grant grant-0001 approved by Alice, Bob"

DEFAULT = LocalPolicy()
NO_CONTROL = LocalPolicy(allow_control=False)
NO_UNATTENDED = LocalPolicy(allow_unattended=False)
ALWAYS_ASK = LocalPolicy(require_prompt=True, prompt_timeout_s=12)
BROKEN = LocalPolicy(allow_control=False, allow_unattended=False, require_prompt=True, broken="not valid TOML")


def grant(actions: list[str] | None = None) -> UnattendedGrant:
    return UnattendedGrant(grant_id="grant-0001", groups=["lab"], technician_names=["Dave"],
                           actions=actions or ["view"], not_before=NOW - 60, not_after=NOW + 3600,  # type: ignore[arg-type]
                           issuer="Alice", issued_at=NOW - 60)


#: The store verified the grant; no proof checked yet.
HOLDS = DocumentFacts(grant(), APPROVED)
CONTROL_HOLDS = DocumentFacts(grant(["view", "control"]), APPROVED)
#: … and Dave's proof over the device's nonce verified.
PROVEN = DocumentFacts(grant(), APPROVED, technician="Dave")
CONTROL_PROVEN = DocumentFacts(grant(["view", "control"]), APPROVED, technician="Dave")
REFUSED = DocumentFacts(None, "revocation list is stale (expired at 2023-11-14 22:00:00Z)")
BAD_PROOF = DocumentFacts(grant(), APPROVED, proof_problem="technician proof is for another nonce (replayed or stale)")


def new(mode: Mode, document_id: str | None = None) -> ConsentRequest:
    return ConsentRequest(session_id="s-1", technician="Ann Smith", technician_user="ann",
                          technician_role="technician", mode=mode, reason="printer", document_id=document_id)


def upgrade(current: Mode, mode: Mode, document_id: str | None = None) -> ConsentRequest:
    return ConsentRequest(session_id="s-1", technician="Ann Smith", technician_user="ann",
                          technician_role="technician", mode=mode, reason="need the mouse", document_id=document_id,
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
    facts: DocumentFacts | None = None
    nobody: str = ""
    note: str = ""
    technician: str = "Ann Smith"
    extra: dict[str, object] = field(default_factory=dict)


DOC = "grant-0001"
CASES = [
    # --- new sessions, attended --------------------------------------------------------------------
    Case("view asks the user", new("view"), DEFAULT, Verdict.ASK_USER, "user", "view"),
    Case("control asks the user", new("control"), DEFAULT, Verdict.ASK_USER, "user", "control"),
    Case("policy forbids control: ask for view, say why", new("control"), NO_CONTROL, Verdict.ASK_USER, "user",
         "view", note=VIEW_ONLY_NOTE),
    Case("broken policy refuses", new("view"), BROKEN, Verdict.DENY, "policy", reason="local policy unusable"),
    Case("nobody logged in", new("view"), DEFAULT, Verdict.DENY, "unavailable", reason=NOBODY, nobody=NOBODY),
    Case("no display", new("control"), DEFAULT, Verdict.DENY, "unavailable", reason=NO_DISPLAY, nobody=NO_DISPLAY),
    # --- new sessions under a signed grant document ------------------------------------------------
    Case("a holding grant asks the technician to prove who they are", new("view", DOC), DEFAULT, Verdict.CHALLENGE,
         "grant", "view", "waiting for the technician's signature", HOLDS, NOBODY),
    Case("proven technician starts without asking, nobody there", new("view", DOC), DEFAULT, Verdict.ALLOW_BY_GRANT,
         "grant", "view", f"{APPROVED}; technician Dave verified", PROVEN, NOBODY),
    Case("control grant and proof allow control", new("control", DOC), DEFAULT, Verdict.ALLOW_BY_GRANT, "grant",
         "control", facts=CONTROL_PROVEN),
    Case("policy's view-only: the challenge is for view", new("control", DOC), NO_CONTROL, Verdict.CHALLENGE,
         "grant", "view", facts=HOLDS),
    Case("refused grant: the store's reason", new("view", DOC), DEFAULT, Verdict.DENY, "grant",
         reason=f"grant refused: {REFUSED.reason}", facts=REFUSED),
    Case("nothing checked for a named grant", new("view", DOC), DEFAULT, Verdict.DENY, "grant",
         reason="grant refused: not checked"),
    Case("refused proof", new("view", DOC), DEFAULT, Verdict.DENY, "grant",
         reason="technician proof refused: technician proof is for another nonce", facts=BAD_PROOF),
    Case("policy forbids unattended", new("view", DOC), NO_UNATTENDED, Verdict.DENY, "policy",
         reason="unattended access is forbidden", facts=PROVEN),
    Case("broken policy refuses a proven grant", new("view", DOC), BROKEN, Verdict.DENY, "policy",
         reason="local policy unusable", facts=PROVEN),
    Case("policy requires a prompt: the proven technician is named as verified", new("view", DOC), ALWAYS_ASK,
         Verdict.ASK_USER, "user", "view", facts=PROVEN, technician="Dave (verified)"),
    Case("required prompt, proven grant, nobody there", new("view", DOC), ALWAYS_ASK, Verdict.DENY, "unavailable",
         reason=NOBODY, facts=PROVEN, nobody=NOBODY),
    Case("required prompt does not rescue a refused grant", new("view", DOC), ALWAYS_ASK, Verdict.DENY, "grant",
         reason="stale", facts=REFUSED),
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
    # An upgrade under a grant needs the technician's fresh proof for control, not the user's answer.
    Case("upgrade under a signed grant asks a fresh proof", upgrade("view", "control", DOC), DEFAULT,
         Verdict.CHALLENGE, "grant", "control", "waiting for the technician's signature", CONTROL_HOLDS, NOBODY),
    Case("upgrade under a signed grant, proven, nobody there", upgrade("view", "control", DOC), DEFAULT,
         Verdict.ALLOW_BY_GRANT, "grant", "control", facts=CONTROL_PROVEN, nobody=NOBODY),
    Case("upgrade under a view-only grant is refused", upgrade("view", "control", DOC), DEFAULT, Verdict.DENY,
         "grant", reason="does not allow 'control'", facts=PROVEN),
    Case("upgrade under a grant, proof refused", upgrade("view", "control", DOC), DEFAULT, Verdict.DENY, "grant",
         reason="technician proof refused", facts=DocumentFacts(grant(["view", "control"]), APPROVED,
                                                               proof_problem="no technician proof arrived")),
]


def _decide(case: Case) -> ConsentDecision:
    return decide(case.request, case.policy, document=case.facts, nobody_to_ask=case.nobody)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decision_table(case: Case) -> None:
    """Each row: the verdict, who decided, the mode, the reason, and (when asking) what the prompt says."""
    decision = _decide(case)
    assert (decision.verdict, decision.by, decision.mode) == (case.verdict, case.by, case.mode), decision
    assert case.reason in decision.reason
    assert decision.accepted == (case.verdict in (Verdict.ALLOW_BY_GRANT, Verdict.UNCHANGED))
    if case.verdict in (Verdict.ALLOW_BY_GRANT, Verdict.CHALLENGE):
        assert case.facts is not None and decision.grant is case.facts.grant
    if case.verdict is Verdict.ALLOW_BY_GRANT:
        assert decision.verified_technician == "Dave"
    if case.verdict is Verdict.ASK_USER:
        prompt = decision.prompt
        assert prompt is not None
        assert (prompt.technician, prompt.mode, prompt.reason) == (case.technician, case.mode, case.request.reason)
        assert prompt.upgrade == case.request.upgrade and prompt.note == case.note
        assert prompt.timeout_s == case.policy.prompt_timeout_s
        # An attended prompt carries no grant; a required prompt under a proven grant keeps it for the session.
        proven = case.facts is not None and case.facts.technician is not None
        assert decision.grant is (case.facts.grant if proven and case.facts is not None else None)
    else:
        assert decision.prompt is None


def test_answers_decide_a_prompt() -> None:
    """Allow grants exactly the prompt's mode (view when policy downgraded control); Deny/timeout refuse."""
    asked = decide(new("control"), NO_CONTROL, document=None, nobody_to_ask="")
    allowed = asked.answered(PromptAnswer(True, "user", "allowed by the user"))
    assert (allowed.verdict, allowed.by, allowed.mode, allowed.accepted) == (Verdict.ALLOW_BY_USER, "user", "view",
                                                                             True)
    denied = asked.answered(PromptAnswer(False, "user", "denied by the user"))
    assert (denied.verdict, denied.by, denied.mode, denied.accepted) == (Verdict.DENY, "user", None, False)
    timed_out = asked.answered(PromptAnswer(False, "timeout", "no answer to the consent prompt"))
    assert (timed_out.verdict, timed_out.by, timed_out.reason) == (Verdict.DENY, "timeout",
                                                                   "no answer to the consent prompt")
    under_grant = decide(new("view", DOC), ALWAYS_ASK, document=PROVEN,
                         nobody_to_ask="").answered(PromptAnswer(True, "user", "allowed by the user"))
    assert under_grant.accepted and under_grant.grant is PROVEN.grant  # the session stays bound to its grant
    assert under_grant.verified_technician == "Dave"


def test_only_a_prompt_can_be_answered() -> None:
    """Answering a verdict that asked nobody is a programming error, not a silent Allow."""
    by_grant = decide(new("view", DOC), DEFAULT, document=PROVEN, nobody_to_ask="")
    challenge = decide(new("view", DOC), DEFAULT, document=HOLDS, nobody_to_ask="")
    refused = decide(new("view"), BROKEN, document=None, nobody_to_ask="")
    for decision in (by_grant, challenge, refused):
        with pytest.raises(ValueError, match="nothing was asked"):
            decision.answered(PromptAnswer(True, "user", "allowed"))


POLICIES = [DEFAULT, NO_CONTROL, NO_UNATTENDED, ALWAYS_ASK, BROKEN, LocalPolicy(allow_control=False,
                                                                                 require_prompt=True)]
FACTS: list[DocumentFacts | None] = [None, HOLDS, CONTROL_HOLDS, PROVEN, CONTROL_PROVEN, REFUSED, BAD_PROOF]
NAMES: list[str | None] = [None, DOC]


def _every_input() -> list[tuple[LocalPolicy, DocumentFacts | None, str | None, str]]:
    return list(itertools.product(POLICIES, FACTS, NAMES, ["", NOBODY]))


def test_view_consent_never_yields_control() -> None:
    """Over every combination: a request for view, or control where the policy forbids it, is never granted
    control — not by the grant, not after the user's Allow."""
    for policy, facts, document_id, nobody in _every_input():
        requests = [new("view", document_id), upgrade("view", "view", document_id)]
        if not policy.allow_control:
            requests += [new("control", document_id), upgrade("view", "control", document_id)]
        for request in requests:
            decision = decide(request, policy, document=facts, nobody_to_ask=nobody)
            if decision.verdict is Verdict.ASK_USER:
                decision = decision.answered(PromptAnswer(True, "user", "allowed"))
            assert decision.mode != "control", (request, policy, facts, decision)


def test_nothing_unattended_starts_without_a_verified_technician() -> None:
    """Over every combination: a session starts by grant only with a document that holds and a verified proof."""
    for policy, facts, document_id, nobody in _every_input():
        for request in (new("view", document_id), new("control", document_id)):
            decision = decide(request, policy, document=facts, nobody_to_ask=nobody)
            if decision.verdict is Verdict.ALLOW_BY_GRANT:
                assert facts is not None and facts.grant is not None and facts.technician is not None
                assert document_id is not None and decision.verified_technician == facts.technician


def test_prompts_call_a_technician_verified_only_after_a_proof() -> None:
    """Over every combination: a prompt names the technician "(verified)" only when a proof was checked."""
    for policy, facts, document_id, nobody in _every_input():
        for request in (new("view", document_id), upgrade("view", "control", document_id)):
            decision = decide(request, policy, document=facts, nobody_to_ask=nobody)
            if decision.prompt is not None and "verified" in decision.prompt.technician:
                assert facts is not None and facts.technician is not None and document_id is not None


def test_upgrade_needs_a_fresh_prompt_or_a_fresh_proof() -> None:
    """Over every combination: upgrading an attended session to control always asks the user again; a session
    under a grant gets control only from a grant that allows control and a proof checked for this upgrade."""
    for policy, facts, document_id, nobody in _every_input():
        decision = decide(upgrade("view", "control", document_id), policy, document=facts, nobody_to_ask=nobody)
        if document_id is None:
            assert decision.verdict in (Verdict.ASK_USER, Verdict.DENY), (policy, facts, decision)
        if decision.verdict is Verdict.ALLOW_BY_GRANT:
            assert facts is not None and facts.grant is not None and facts.technician is not None
            assert "control" in facts.grant.actions and decision.mode == "control"
        if decision.prompt is not None:
            assert decision.prompt.upgrade and decision.prompt.mode == "control"


def test_nobody_there_never_reaches_a_prompt() -> None:
    """Over every combination: with nobody to ask, the verdict is never ASK_USER (no prompt on an empty desk)."""
    for policy, facts, document_id, _nobody in _every_input():
        for request in (new("view", document_id), new("control", document_id),
                        upgrade("view", "control", document_id)):
            decision = decide(request, policy, document=facts, nobody_to_ask=NOBODY)
            assert decision.verdict is not Verdict.ASK_USER


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(verdict=Verdict.DENY, by="policy", reason="x", mode="view"), "no mode"),
    (dict(verdict=Verdict.ALLOW_BY_USER, by="user", reason="x"), "needs a mode"),
    (dict(verdict=Verdict.ALLOW_BY_GRANT, by="grant", reason="x", mode="view"), "needs the grant"),
    (dict(verdict=Verdict.CHALLENGE, by="grant", reason="x", mode="view"), "needs the grant"),
    (dict(verdict=Verdict.ALLOW_BY_GRANT, by="grant", reason="x", mode="view", grant=grant()), "verified proof"),
    (dict(verdict=Verdict.ASK_USER, by="user", reason="x", mode="view"), "needs one"),
])
def test_decisions_cannot_be_built_inconsistent(kwargs: dict[str, object], message: str) -> None:
    """A refusal with a mode, an allow without one, a grant verdict without a grant (or without a proven
    technician), a question without a prompt."""
    with pytest.raises(ValueError, match=message):
        ConsentDecision(**kwargs)  # type: ignore[arg-type]


def test_prompt_mode_must_match_the_granted_mode() -> None:
    """An ASK_USER whose prompt asks about view cannot grant control."""
    asked = decide(new("view"), DEFAULT, document=None, nobody_to_ask="")
    with pytest.raises(ValueError, match="mode that would be granted"):
        ConsentDecision(Verdict.ASK_USER, "user", "x", "control", None, "", asked.prompt)
