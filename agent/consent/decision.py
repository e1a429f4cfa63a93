"""The agent's consent decision, pure: may this session (or this upgrade) start, and how.

One rule for both ways a technician asks — a new ``session.offer`` and a ``session.mode``
upgrade of a running session — applied in this order, first refusal wins:

1. **Local policy** (:mod:`agent.policy`): an unusable policy file refuses everything;
   control switched off refuses an upgrade to control and turns a new request for control
   into a request for view (the prompt says so); unattended access switched off refuses any
   request that names a grant document.
2. **The signed grant**, when a new request names one (``document_id``): the device's
   authority store must have verified it — approver signatures from the pinned root, not
   revoked, fresh revocations, this device, this mode, now (:class:`DocumentFacts`). Then the
   technician must prove who they are: the verdict is :attr:`Verdict.CHALLENGE` until their
   signature over the device's fresh nonce has been checked, after which the session starts
   without asking (unless the policy requires a prompt anyway; the prompt then names the
   technician as verified). Nothing the server signs opens a session (it holds no such key).
   An upgrade of a session running under a grant (view → control) is the same rule again for
   the new mode: the grant must allow it and the technician must sign a *fresh* nonce for it
   (their first proof named view only). An upgrade of an attended session is always asked.
3. **The user**: somebody must be there to ask (a display and a logged-in user), else the
   request is refused with that reason; a technician the user declined (Deny, or no answer)
   less than the policy's ``decline_cooldown_s`` ago is refused at once, without a prompt
   (:func:`cooldown_refusal`: repeated requests must not wear the user down); otherwise the
   verdict is to ask, and the answer (:meth:`ConsentDecision.answered`) decides.

No I/O, no asyncio, no clock of its own: the caller passes the policy, what the authority store
found, whether anybody can be asked, then carries the verdict out. The mode granted is always the
mode the user (or the grant and the technician's proof) was asked about, so a consent to view
never yields control.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from protocol.authority import UnattendedGrant
from protocol.session import AnsweredBy, Mode

from ..policy import LocalPolicy
from ..toolkit.caps import decide_caps
from .ui import PromptAnswer, PromptRequest

#: Shown in the prompt when the policy turned a request for control into one for view.
VIEW_ONLY_NOTE = "Control was requested, but this device's policy allows viewing only."


class Verdict(enum.Enum):
    """What the agent does with a request."""

    #: Refuse; the decision's ``by`` and ``reason`` say who and why.
    DENY = "deny"
    #: An upgrade to the mode the session already runs in: nothing to consent to.
    UNCHANGED = "unchanged"
    #: The signed grant holds: the technician must now sign the device's fresh nonce (then decide again).
    CHALLENGE = "challenge"
    #: Start without asking: a signed grant and the technician's proof cover it, and the policy needs no prompt.
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
    #: The approver-signed grant document a new unattended session names (for an upgrade: the grant the
    #: session runs under; None for an attended session, whose upgrade the user is asked about).
    document_id: str | None = None
    #: The running session's mode when this is an upgrade; None for a new session.
    current_mode: Mode | None = None

    @property
    def upgrade(self) -> bool:
        return self.current_mode is not None


@dataclass(frozen=True, slots=True)
class DocumentFacts:
    """What the device's authority store found for the request's grant document, and for the proof."""

    #: The grant, verified for this device, this mode and now; None when it was refused.
    grant: UnattendedGrant | None
    #: Why it was refused, or who approved it.
    reason: str
    #: The holder of the technician credential whose proof verified; None until a proof was checked.
    technician: str | None = None
    #: Why the technician's proof was refused ("" while none was refused).
    proof_problem: str = ""

    def __post_init__(self) -> None:
        if self.technician is not None and self.grant is None:
            raise ValueError("a technician is verified only against a grant that holds")


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    """A verdict with who decided and why; the mode and grant the session runs under when accepted."""

    verdict: Verdict
    by: AnsweredBy
    reason: str
    #: The mode the session may run in (for ASK_USER: the mode the prompt asks about); None when denied.
    mode: Mode | None = None
    #: The signed grant the session runs under (unattended), if any.
    grant: UnattendedGrant | None = None
    #: The technician whose signature the device verified ("" when none was).
    verified_technician: str = ""
    #: What to ask the user (ASK_USER only).
    prompt: PromptRequest | None = None

    def __post_init__(self) -> None:
        if self.verdict is Verdict.DENY and (self.mode is not None or self.grant is not None):
            raise ValueError("a refusal carries no mode and no grant")
        if self.verdict is not Verdict.DENY and self.mode is None:
            raise ValueError(f"{self.verdict.name} needs a mode")
        if self.verdict in (Verdict.ALLOW_BY_GRANT, Verdict.CHALLENGE) and self.grant is None:
            raise ValueError(f"{self.verdict.name} needs the grant")
        if self.verdict is Verdict.ALLOW_BY_GRANT and not self.verified_technician:
            raise ValueError("ALLOW_BY_GRANT needs the technician's verified proof")
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
        return ConsentDecision(Verdict.ALLOW_BY_USER, "user", answer.reason, self.mode, self.grant,
                               self.verified_technician)


def deny(by: AnsweredBy, reason: str) -> ConsentDecision:
    return ConsentDecision(Verdict.DENY, by, reason)


def cooldown_refusal(declined_ago: float | None, cooldown_s: float) -> ConsentDecision | None:
    """The refusal while the user's last "no" to this technician is younger than ``cooldown_s``, else None.

    ``declined_ago``: seconds since the user declined this technician (Deny or no answer); None
    when they have not. A negative or NaN value (a clock gone wrong) counts as "just now".
    """
    if declined_ago is None or cooldown_s <= 0:
        return None
    ago = declined_ago if declined_ago > 0 else 0.0  # NaN compares false: "just now"
    if ago >= cooldown_s:
        return None
    return deny("policy", f"the user declined {int(ago)} s ago; try again in {math.ceil(cooldown_s - ago)} s")


def effective_mode(request: ConsentRequest, policy: LocalPolicy) -> tuple[Mode, str]:
    """The mode a new request may get under the local policy, and the note saying why it changed."""
    if request.mode == "control" and not policy.allow_control and not request.upgrade:
        return "view", VIEW_ONLY_NOTE
    return request.mode, ""


def decide(request: ConsentRequest, policy: LocalPolicy, *, document: DocumentFacts | None,
           nobody_to_ask: str, declined_ago: float | None = None) -> ConsentDecision:
    """Local policy, then the signed grant and the technician's proof, then the user (module docstring).

    ``document`` is what the authority store found for ``request.document_id`` (checked for
    :func:`effective_mode`; None when the request names none); ``nobody_to_ask`` says why no
    prompt can be shown ("" when someone can be asked); ``declined_ago`` is how many seconds ago
    the user declined this technician (None: not since the agent started).
    """
    if request.current_mode == request.mode:
        return ConsentDecision(Verdict.UNCHANGED, "policy", "already in this mode", request.mode)
    if policy.broken:
        return deny("policy", f"local policy unusable: {policy.broken}")
    if request.mode == "control" and not policy.allow_control and request.upgrade:
        return deny("policy", "control is forbidden by this device's policy")
    mode, note = effective_mode(request, policy)
    granted: UnattendedGrant | None = None
    technician, verified = request.technician, ""
    if request.document_id is not None:  # new, or an upgrade of a session under this grant: a fresh proof
        if not policy.allow_unattended:
            return deny("policy", "unattended access is forbidden by this device's policy")
        if document is None or document.grant is None:
            return deny("grant", f"grant refused: {document.reason if document else 'not checked'}")
        if mode not in document.grant.actions:  # the store checked it for this mode; never trust a mix-up
            return deny("grant", f"grant refused: grant {document.grant.grant_id} does not allow {mode!r}")
        if document.technician is None:
            if document.proof_problem:
                return deny("grant", f"technician proof refused: {document.proof_problem}")
            return ConsentDecision(Verdict.CHALLENGE, "grant", "waiting for the technician's signature", mode,
                                   document.grant)
        granted, verified = document.grant, document.technician
        technician = f"{verified} (verified)"
        if not policy.require_prompt:
            return ConsentDecision(Verdict.ALLOW_BY_GRANT, "grant",
                                   f"{document.reason}; technician {verified} verified", mode, granted, verified)
    if nobody_to_ask:
        return deny("unavailable", nobody_to_ask)
    cooling = cooldown_refusal(declined_ago, policy.decline_cooldown_s)
    if cooling is not None:
        return cooling
    prompt = PromptRequest(technician=technician, mode=mode, reason=request.reason,
                           timeout_s=policy.prompt_timeout_s, note=note, upgrade=request.upgrade,
                           session_id=request.session_id, capabilities=tuple(decide_caps(policy, granted).listed()))
    return ConsentDecision(Verdict.ASK_USER, "user", "waiting for the user's answer", mode, granted, verified, prompt)
