"""The agent's consent decision, pure: may this session (or this upgrade) start, and how.

One rule for both ways a technician asks — a new ``session.offer`` and a ``session.mode``
upgrade of a running session — applied in this order, first refusal wins:

1. **Local policy** (:mod:`agent.policy`): an unusable policy file refuses everything;
   control switched off refuses an upgrade to control and turns a new request for control
   into a request for view (the prompt says so); unattended access switched off refuses any
   request that names a grant.
2. **The grant**, when the request names one: it must be in the agent's book (verified
   when it arrived), not revoked, and allow this mode for this technician on this device at
   this time. A good grant starts the session without asking, unless the policy requires a
   prompt anyway.
3. **The user**: somebody must be there to ask (a display and a logged-in user), else the
   request is refused with that reason; otherwise the verdict is to ask, and the answer
   (:meth:`ConsentDecision.answered`) decides.

No I/O, no asyncio, no clock of its own: the caller passes the policy, what the grant book
holds, whether anybody can be asked and the time, then carries the verdict out. The mode
granted is always the mode the user (or the grant) was asked about, so a consent to view
never yields control.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from protocol.grants import Decision, Grant, evaluate
from protocol.session import AnsweredBy, Mode

from ..policy import LocalPolicy
from .ui import PromptAnswer, PromptRequest

#: Shown in the prompt when the policy turned a request for control into one for view.
VIEW_ONLY_NOTE = "Control was requested, but this device's policy allows viewing only."


class Verdict(enum.Enum):
    """What the agent does with a request."""

    #: Refuse; the decision's ``by`` and ``reason`` say who and why.
    DENY = "deny"
    #: An upgrade to the mode the session already runs in: nothing to consent to.
    UNCHANGED = "unchanged"
    #: Start (or upgrade) without asking: a grant covers it and the policy needs no prompt.
    ALLOW_BY_GRANT = "allow_by_grant"
    #: Show the decision's ``prompt``; the answer decides (:meth:`ConsentDecision.answered`).
    ASK_USER = "ask_user"
    #: The user allowed the prompt.
    ALLOW_BY_USER = "allow_by_user"


ACCEPTED = frozenset({Verdict.UNCHANGED, Verdict.ALLOW_BY_GRANT, Verdict.ALLOW_BY_USER})


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    """What a technician asks for: a new session, or (``current_mode`` set) a running one's upgrade."""

    session_id: str
    #: Shown to the user in the prompt.
    technician: str
    #: Who the grant must name (by username or role).
    technician_user: str
    technician_role: str
    mode: Mode
    reason: str = ""
    #: The grant a new unattended session names, or the grant a running session started under.
    grant_id: str | None = None
    #: The running session's mode when this is an upgrade; None for a new session.
    current_mode: Mode | None = None

    @property
    def upgrade(self) -> bool:
        return self.current_mode is not None


@dataclass(frozen=True, slots=True)
class GrantFacts:
    """What the agent's grant book holds for the request's grant, and where it is checked."""

    #: The verified grant named by the request; None when the book lacks it (never pushed, forged, dropped).
    grant: Grant | None
    revoked: bool
    device_id: str
    group: str


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    """A verdict with who decided and why; the mode and grant the session runs under when accepted."""

    verdict: Verdict
    by: AnsweredBy
    reason: str
    #: The mode the session may run in (for ASK_USER: the mode the prompt asks about); None when denied.
    mode: Mode | None = None
    #: The grant the session runs under (unattended), if any.
    grant: Grant | None = None
    #: What to ask the user (ASK_USER only).
    prompt: PromptRequest | None = None

    def __post_init__(self) -> None:
        if self.verdict is Verdict.DENY and (self.mode is not None or self.grant is not None):
            raise ValueError("a refusal carries no mode and no grant")
        if self.verdict is not Verdict.DENY and self.mode is None:
            raise ValueError(f"{self.verdict.name} needs a mode")
        if self.verdict is Verdict.ALLOW_BY_GRANT and self.grant is None:
            raise ValueError("ALLOW_BY_GRANT needs the grant")
        if (self.verdict is Verdict.ASK_USER) != (self.prompt is not None):
            raise ValueError("a prompt belongs to ASK_USER, and ASK_USER needs one")
        if self.prompt is not None and self.prompt.mode != self.mode:
            raise ValueError("the prompt must ask about the mode that would be granted")

    @property
    def accepted(self) -> bool:
        return self.verdict in ACCEPTED

    def answered(self, answer: PromptAnswer) -> ConsentDecision:
        """The final decision once the user answered this decision's prompt."""
        if self.verdict is not Verdict.ASK_USER:
            raise ValueError(f"nothing was asked ({self.verdict.name})")
        if not answer.allowed:
            return deny(answer.by, answer.reason)
        return ConsentDecision(Verdict.ALLOW_BY_USER, "user", answer.reason, self.mode, self.grant)


def deny(by: AnsweredBy, reason: str) -> ConsentDecision:
    return ConsentDecision(Verdict.DENY, by, reason)


def check_grant(request: ConsentRequest, mode: Mode, facts: GrantFacts | None, now: float,
                local: datetime) -> Decision:
    """Does the request's grant allow ``mode`` now (``now`` epoch seconds, ``local`` device-local time)?"""
    if facts is not None and facts.revoked:
        return Decision(False, "grant has been revoked")
    if facts is None or facts.grant is None:
        return Decision(False, f"no valid grant {request.grant_id!r} on this device")
    return evaluate(facts.grant, device_id=facts.device_id, group=facts.group, technician=request.technician_user,
                    role=request.technician_role, action=mode, now=now, local=local)


def decide(request: ConsentRequest, policy: LocalPolicy, *, grant: GrantFacts | None, nobody_to_ask: str,
           now: float, local: datetime) -> ConsentDecision:
    """Local policy, then the grant, then the user (see the module docstring).

    ``grant`` is what the book holds for ``request.grant_id`` (None when the request names no
    grant or the book has nothing); ``nobody_to_ask`` says why no prompt can be shown ("" when
    someone can be asked).
    """
    if request.current_mode == request.mode:
        return ConsentDecision(Verdict.UNCHANGED, "policy", "already in this mode", request.mode)
    if policy.broken:
        return deny("policy", f"local policy unusable: {policy.broken}")
    mode, note = request.mode, ""
    if mode == "control" and not policy.allow_control:
        if request.upgrade:
            return deny("policy", "control is forbidden by this device's policy")
        mode, note = "view", VIEW_ONLY_NOTE
    granted: Grant | None = None
    if request.grant_id is not None:
        if not policy.allow_unattended:
            return deny("policy", "unattended access is forbidden by this device's policy")
        checked = check_grant(request, mode, grant, now, local)
        if not checked.allowed:
            return deny("grant", f"grant refused: {checked.reason}")
        granted = grant.grant if grant is not None else None
        if not policy.require_prompt:
            return ConsentDecision(Verdict.ALLOW_BY_GRANT, "grant", checked.reason, mode, granted)
    if nobody_to_ask:
        return deny("unavailable", nobody_to_ask)
    prompt = PromptRequest(technician=request.technician, mode=mode, reason=request.reason,
                           timeout_s=policy.prompt_timeout_s, note=note, upgrade=request.upgrade)
    return ConsentDecision(Verdict.ASK_USER, "user", "waiting for the user's answer", mode, granted, prompt)
