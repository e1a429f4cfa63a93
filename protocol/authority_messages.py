"""Control-channel messages that carry authority: the server relays, the agent decides.

The server holds no key that authorizes anything on a device. It forwards what the offline
root and the approvers signed (:class:`AuthorityUpdate`), and for unattended work it carries
the agent's fresh nonce to the technician and the technician's signed answer back
(:class:`SessionChallenge` → :class:`SessionProof`). The agent says what it accepted and why
it refused the rest (:class:`AuthorityStatus`), so the console can show it — but every
decision is taken, and audited, on the device.

Unattended session, step by step::

    technician ──POST /sessions {mode, document_id}──▶ server ──session.offer(document_id)──▶ agent
    agent: document chain valid for this device/action/now?  no → session.answer(accepted=false, reason)
                                                              yes → session.challenge(nonce, expires_at)
    technician ◀── GET /sessions/{id} shows the challenge ── server ◀─────────────────────────┘
    technician signs TechnicianStatement{nonce, device_id, action, document_id, signed_at}
      (CLI Ed25519 key or passkey) ──POST /sessions/{id}/proof──▶ server ──session.proof──▶ agent
    agent: verify_technician(...) against the grant's technicians → session.answer(by="grant") → tunnel
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from . import limits
from .authority import (
    DocumentId,
    Nonce,
    Reason,
    RootInfo,
    RootRotation,
    SignedCert,
    SignedDocument,
    SignedRevocationList,
    TechnicianProof,
    Timestamp,
)
from .grants import Action
from .legacy import LegacyHandover
from .messages import Id, Message

#: Documents and certificates an update may carry at once.
MAX_DOCUMENTS = 256
MAX_CERTS = 1024


class AuthorityUpdate(Message, frozen=True, tag="authority.update"):
    """Server → agent: the org root, its rotations, credential certificates, the newest revocation
    list and the signed documents that concern this device. ``complete`` = the documents listed are
    all there are (the agent forgets others); otherwise they are added to what it holds."""

    sender: ClassVar[str] = "server"
    root: RootInfo | None = None
    rotations: Annotated[list[RootRotation], msgspec.Meta(max_length=16)] = []
    certs: Annotated[list[SignedCert], msgspec.Meta(max_length=MAX_CERTS)] = []
    revocations: SignedRevocationList | None = None
    documents: Annotated[list[SignedDocument], msgspec.Meta(max_length=MAX_DOCUMENTS)] = []
    withdrawn: Annotated[list[DocumentId], msgspec.Meta(max_length=MAX_DOCUMENTS)] = []
    complete: bool = True
    #: The one-time hand-over from the old grant key to ``root`` (protocol/legacy.py): only an agent
    #: enrolled before the org root existed (it has grant.pub, no pin) takes it, once.
    handover: LegacyHandover | None = None
    #: An update larger than :data:`~protocol.limits.MAX_AUTHORITY_UPDATE_BYTES` travels as ``parts``
    #: messages (:func:`split_update`, root and revocations in the first); the agent joins them
    #: (:func:`join_parts`) and applies them as one.
    part: Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_AUTHORITY_PARTS)] = 1
    parts: Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_AUTHORITY_PARTS)] = 1

    def __post_init__(self) -> None:
        if self.part > self.parts:
            raise ValueError("part must not exceed parts")


class Refusal(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    document_id: Annotated[str, msgspec.Meta(max_length=limits.MAX_ID_LEN)]
    reason: Reason


class AuthorityStatus(Message, frozen=True, tag="authority.status"):
    """Agent → server: what the agent holds after an update, and why it refused the rest."""

    sender: ClassVar[str] = "agent"
    #: The root the agent trusts (its pin), or None when it was installed without one.
    root_fingerprint: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")] | None = None
    accepted: Annotated[list[DocumentId], msgspec.Meta(max_length=MAX_DOCUMENTS)] = []
    refused: Annotated[list[Refusal], msgspec.Meta(max_length=MAX_DOCUMENTS)] = []
    revocation_sequence: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: False when the agent will not honour unattended documents now (no pin, stale revocations …).
    unattended_ok: bool = False
    problem: Reason = ""


class SessionChallenge(Message, frozen=True, tag="session.challenge"):
    """Agent → server: the fresh nonce the technician must sign before an unattended session starts."""

    sender: ClassVar[str] = "agent"
    session_id: Id
    nonce: Nonce
    document_id: DocumentId
    action: Action
    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_SHORT_STR)]
    expires_at: Timestamp


class SessionProof(Message, frozen=True, tag="session.proof"):
    """Server → agent: the technician's signature over the agent's challenge (relayed unchanged)."""

    sender: ClassVar[str] = "server"
    session_id: Id
    proof: TechnicianProof


class TaskChallenge(Message, frozen=True, tag="task.challenge"):
    """Agent → server: a run of a task authorization that names technicians waits for one of them to sign this
    fresh nonce (TechnicianStatement with action ``tasks`` and the task's document id) before it runs."""

    sender: ClassVar[str] = "agent"
    run_id: Id
    nonce: Nonce
    document_id: DocumentId
    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_SHORT_STR)]
    expires_at: Timestamp


class TaskProof(Message, frozen=True, tag="task.proof"):
    """Server → agent: the technician's signature over a run's challenge (relayed unchanged)."""

    sender: ClassVar[str] = "server"
    run_id: Id
    proof: TechnicianProof
