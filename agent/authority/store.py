"""What this device holds of the org's authority, and every check made against it.

The server delivers (``authority.update``) the org root, its rotations, credential certificates,
the newest revocation list and the signed documents that concern this device. This store keeps
only what verifies against the **pin** — the root fingerprint the device was installed with
(``AgentConfig.trust_root_sha256`` or ``helpline agent enroll --root-sha256``) — and answers the
questions unattended work asks: is this grant valid here, for this action, now
(:meth:`AuthorityStore.check_grant`)? Did a technician the grant names sign this device's fresh
nonce (:meth:`AuthorityStore.verify_proof`)?

Rules the server cannot bend:

- **The pin.** A root whose fingerprint differs is refused (audited, reported) and, while the
  server keeps offering it, nothing unattended is honoured. Only a :class:`RootRotation` signed by
  the pinned root moves the pin. No pin at all: no unattended document is honoured.
- **Revocations never go back.** The highest revocation-list sequence ever accepted is kept; an
  older list is refused. A missing or expired list refuses every unattended document, and the
  reason says when it expired.
- **Documents** are kept only when :func:`certs.authority.verify_chain` allows them *and* they
  concern this device; they are verified again at every use, certificates with them.
- **Approver sets never go back.** An ``approver_set`` document that verifies (four-eyes, by
  approvers of the set in force) and whose sequence is higher than the applied one becomes the
  set: from then on only its credential ids count as approvers (``AuthorityPolicy.approver_set``),
  and held documents are verified again under it. An older or equal sequence is refused.
- **The device's policy** (:class:`~protocol.authority.AuthorityPolicy`) comes from the admin's
  local policy file (:mod:`agent.policy`), which can only tighten the defaults.

Self-service fixes and release manifests have their entry points here for the features that will
run them: :meth:`AuthorityStore.check_fix` (signed parameter limits, a run budget kept in
:mod:`.fixes`) and :meth:`AuthorityStore.check_release` (no downgrade, the digests to check, :mod:`.releases`).

Every decision is written to the device audit log (:mod:`.audit`) before it is reported. State
lives in ``<state>/authority/authority.json`` (0600, directory 0700), written atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec

from certs.authority import (
    RevocationStatus,
    check_root,
    normalize_fingerprint,
    verify_cert,
    verify_chain,
    verify_revocation_list,
    verify_rotation,
    verify_technician,
    when,
)
from common.files import atomic_write
from protocol.authority import (
    ApproverSetChange,
    AuthorityPolicy,
    Body,
    NotCanonical,
    ReleaseManifest,
    RootInfo,
    RootRotation,
    RootRotationBody,
    SelfServiceFix,
    SignedCert,
    SignedDocument,
    SignedRevocationList,
    TaskAuthorization,
    TechnicianProof,
    UnattendedGrant,
    Verdict,
    body_sha256,
    check_fix_params,
    decode_body,
    decode_canonical,
    document_id,
)
from protocol.authority_messages import MAX_CERTS, MAX_DOCUMENTS, AuthorityStatus, AuthorityUpdate, Refusal

from .audit import DeviceAudit
from .first_update import FirstUpdate
from .fixes import FixLedger
from .legacy import LegacyKey
from .releases import ReleaseCheck, release_problem
from .scope import concerns, grant_problem

log = logging.getLogger(__name__)

_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, NotCanonical)

NO_PIN = ("this device was installed without a trust root fingerprint (trust_root_sha256 or enroll --root-sha256); "
          "it honours no unattended documents")
NO_ROOT = "no trust root matching this device's pin has reached it"
ANOTHER_ROOT = "the server offered another root: "


class Held(msgspec.Struct, kw_only=True):
    """What is persisted: the pin and its history, and what verified against it."""

    #: The pin this state started from (the configured one); another configured pin starts afresh.
    installed_pin: str | None = None
    #: The current pin: the installed one, moved by each accepted rotation.
    pin: str | None = None
    #: Fingerprints from the installed pin to the current one (older roots are not "another root").
    chain: list[str] = []
    root: RootInfo | None = None
    certs: list[SignedCert] = []
    revocations: SignedRevocationList | None = None
    #: The highest revocation-list sequence ever accepted, and that list's issue time.
    revocation_sequence: int = 0
    revocation_issued_at: float = 0.0
    documents: list[SignedDocument] = []
    #: Documents refused by the last updates: id → reason (an offer naming one is told why).
    refused: dict[str, str] = {}
    #: Why the root the server last offered was refused ("" when it was fine).
    root_problem: str = ""
    #: Passkey signature counters of technicians (a counter that does not grow is a clone).
    counters: dict[str, Annotated[int, msgspec.Meta(ge=0)]] = {}
    #: The applied approver set (None: every root-certified approver counts), the change that set it
    #: (its id, sequence and body's SHA-256): a later change must have a higher sequence.
    approver_set: list[str] | None = None
    approver_set_id: str = ""
    approver_set_sequence: int = 0
    approver_set_sha256: str = ""


def parse_pin(text: str | None) -> str | None:
    """A configured fingerprint as 64 lower-case hex digits; None when unset. Raises ValueError when malformed."""
    if text is None or not text.strip():
        return None
    pin = normalize_fingerprint(text)
    if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
        raise ValueError("a trust root fingerprint is 64 hex digits (colons and spaces allowed)")
    return pin


@dataclass(frozen=True)
class GrantCheck:
    """A grant document checked for one use: the verdict, and the grant when it holds."""

    verdict: Verdict
    grant: UnattendedGrant | None = None


class AuthorityStore:
    """The device's authority: pin, root, certificates, revocations, documents — and the checks."""

    def __init__(self, directory: Path, *, pin: str | None, device_id: str, group: Callable[[], str],
                 audit: DeviceAudit, policy: AuthorityPolicy | None = None, legacy: LegacyKey | None = None) -> None:
        self.directory = directory
        self.path = directory / "authority.json"
        self.device_id = device_id
        self._group = group
        self.audit = audit
        #: The device's rules (defaults, tightened by the local policy file); the applied approver set is
        #: added by :attr:`policy`.
        self.base_policy = policy or AuthorityPolicy()
        #: The old grant key of a device enrolled before the org root (None: there is none).
        self.legacy = legacy
        #: Whether this connection's first update has been applied (task runs that overtake it wait there).
        self.first_update = FirstUpdate()
        self.fixes = FixLedger(directory / "fix-runs.json")
        self._held = self._load(pin)
        if self._held.pin is not None and legacy is not None and legacy.present():
            legacy.retire("this device pins a trust root; the old grant key authorizes nothing any more")

    # --- persistence ------------------------------------------------------------------------------

    def _load(self, pin: str | None) -> Held:
        fresh = Held(installed_pin=pin, pin=pin, chain=[pin] if pin else [])
        try:
            held = msgspec.json.decode(self.path.read_bytes(), type=Held)
        except FileNotFoundError:
            return fresh
        except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            log.error("authority state %s unreadable; starting empty: %s", self.path, exc)
            return fresh
        if held.installed_pin != pin:
            if held.installed_pin is not None or pin is not None:
                self.audit.record("pin.changed", previous=held.installed_pin, pin=pin,
                                  reason="the configured trust root changed; what the old one certified is dropped")
            return fresh
        return held

    def _save(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        atomic_write(self.path, msgspec.json.encode(self._held), 0o600)

    # --- what the device holds --------------------------------------------------------------------

    @property
    def pin(self) -> str | None:
        return self._held.pin

    @property
    def policy(self) -> AuthorityPolicy:
        """The policy every check uses: the device's own, restricted to the applied approver set."""
        if self._held.approver_set is None:
            return self.base_policy
        return replace(self.base_policy, approver_set=frozenset(self._held.approver_set))

    @property
    def approver_set(self) -> tuple[int, frozenset[str] | None]:
        """The applied approver set's sequence and credential ids (0 and None: none applied)."""
        held = self._held
        return held.approver_set_sequence, None if held.approver_set is None else frozenset(held.approver_set)

    @property
    def group(self) -> str:
        return self._group()

    @property
    def revocation_sequence(self) -> int:
        return self._held.revocation_sequence

    def documents(self) -> list[SignedDocument]:
        return list(self._held.documents)

    def document(self, doc_id: str) -> tuple[SignedDocument, str] | None:
        """The held document with this id and its body's SHA-256 hex."""
        for document in self._held.documents:
            body = _body_or_none(document)
            if body is not None and document_id(body) == doc_id:
                return document, body_sha256(document.body)
        return None

    def unattended_problem(self, now: float) -> str:
        """Why no unattended document is honoured now ("" when they may be, each on its own merits)."""
        held = self._held
        if held.pin is None:
            return held.root_problem or NO_PIN
        if held.root_problem:
            return held.root_problem
        if held.root is None:
            return NO_ROOT
        return self._revocation_status(held.root, now).problem or ""

    def status(self, now: float, refused: Sequence[Refusal] = ()) -> AuthorityStatus:
        """What to report to the server: the pin, the documents held, this update's refusals, the problem."""
        problem = self.unattended_problem(now)
        accepted = [self._held.approver_set_id] if self._held.approver_set_id else []
        for document in self._held.documents[:MAX_DOCUMENTS - len(accepted)]:
            body = _body_or_none(document)
            if body is not None:
                accepted.append(document_id(body))
        return AuthorityStatus(root_fingerprint=self._held.pin, accepted=accepted,
                               refused=list(refused)[:MAX_DOCUMENTS],
                               revocation_sequence=self._held.revocation_sequence, unattended_ok=not problem,
                               problem=problem[:256])

    # --- authority.update -------------------------------------------------------------------------

    def apply(self, update: AuthorityUpdate, now: float) -> AuthorityStatus:
        """Take what verifies from ``update``; audit every refusal; return the status to report."""
        held = self._held
        if held.pin is None and not self._adopt(update):
            problem = NO_PIN
            if self.legacy is not None and self.legacy.problem:
                problem = (f"no trust root pinned: the hand-over from this device's old grant key was refused: "
                           f"{self.legacy.problem}")
            self._root_problem(problem, None, offered_refused=False)
            self._save()
            return self.status(now)
        held = self._held
        root = self._starting_root(update)
        if root is not None:
            root = self._rotate(root, update.rotations, now)
        problem = self._offered_root_problem(update, root)
        self._root_problem(problem, update.root, offered_refused=problem.startswith(ANOTHER_ROOT))
        held.root = root
        if root is None:
            held.certs = []
        else:
            certs = update.certs if update.complete else [*held.certs, *update.certs]
            held.certs = _verified_certs(certs, root)
            if update.revocations is not None:
                self._take_revocations(update.revocations, root, now)
        refusals = self._take_documents(update, now)
        self._save()
        return self.status(now, refusals)

    def _adopt(self, update: AuthorityUpdate) -> bool:
        """A device enrolled under the old grant key takes its pin from the key's one-time hand-over."""
        if update.handover is None or self.legacy is None or not self.legacy.present():
            return False
        pin = self.legacy.adopt(update.handover)
        if pin is None:
            return False
        self._held = Held(installed_pin=pin, pin=pin, chain=[pin])
        return True

    def _starting_root(self, update: AuthorityUpdate) -> RootInfo | None:
        """A root whose fingerprint is the pin: held, offered, or named as the new root of a rotation."""
        pin = self._held.pin
        assert pin is not None
        candidates: list[RootInfo] = [r for r in (self._held.root, update.root) if r is not None]
        for rotation in update.rotations:
            body = _rotation_body(rotation)
            if body is not None:
                candidates.append(body.new_root)
        for candidate in candidates:
            if check_root(candidate, pin) is None:
                return candidate
        return None

    def _rotate(self, root: RootInfo, rotations: Iterable[RootRotation], now: float) -> RootInfo:
        """Follow every rotation signed by the current root (in any order); each one moves the pin."""
        held = self._held
        pending = list(rotations)
        moved = True
        while moved:
            moved = False
            for rotation in list(pending):
                body = _rotation_body(rotation)
                if body is None or body.new_root.fingerprint in held.chain:
                    pending.remove(rotation)  # garbage, or a hand-over this device already made
                    continue
                if body.previous_fingerprint != root.fingerprint:
                    continue  # not from the current root (yet)
                pending.remove(rotation)
                assert held.pin is not None
                verdict = verify_rotation(rotation, pinned_root_fingerprint=held.pin, root=root, now=now,
                                          policy=self.policy)
                if not verdict.allowed or verdict.new_root is None:
                    self.audit.record("root.rotation_refused", reason=verdict.reason,
                                      new_root=body.new_root.fingerprint)
                    continue
                self.audit.record("root.rotated", previous=root.fingerprint, pin=verdict.new_root.fingerprint,
                                  reason=verdict.reason)
                log.warning("trust root rotated: %s", verdict.reason)
                root = verdict.new_root
                held.pin = root.fingerprint
                held.chain.append(root.fingerprint)
                moved = True
        return root

    def _offered_root_problem(self, update: AuthorityUpdate, root: RootInfo | None) -> str:
        offered = update.root
        if offered is not None and offered.fingerprint not in self._held.chain:
            ancestors = {body.previous_fingerprint for body in map(_rotation_body, update.rotations) if body}
            if offered.fingerprint not in ancestors:
                assert self._held.pin is not None
                why = check_root(offered, self._held.pin) or "it is not this device's root"
                return f"{ANOTHER_ROOT}{why}"
        return "" if root is not None else NO_ROOT

    def _root_problem(self, problem: str, offered: RootInfo | None, *, offered_refused: bool) -> None:
        """Remember why nothing unattended is honoured (audited once per change of reason)."""
        if problem and problem != self._held.root_problem:
            if offered_refused:
                self.audit.record("root.refused", reason=problem, offered=offered.fingerprint if offered else None)
                log.error("refused the trust root the server offered: %s", problem)
            else:
                self.audit.record("authority.unusable", reason=problem)
                log.warning("unattended access is refused: %s", problem)
        self._held.root_problem = problem

    def _revocation_status(self, root: RootInfo, now: float) -> RevocationStatus:
        return verify_revocation_list(self._held.revocations, root=root, certs=self._held.certs, now=now,
                                      policy=self.policy, min_sequence=self._held.revocation_sequence)

    def _take_revocations(self, signed: SignedRevocationList, root: RootInfo, now: float) -> None:
        held = self._held
        if held.revocations is not None and signed.body == held.revocations.body:
            return
        status = verify_revocation_list(signed, root=root, certs=held.certs, now=now, policy=self.policy,
                                        min_sequence=held.revocation_sequence)
        listed = status.revocations
        if listed is None:
            self.audit.record("revocations.refused", reason=status.problem or "unusable")
            return
        if (listed.sequence, listed.issued_at) < (held.revocation_sequence, held.revocation_issued_at):
            self.audit.record("revocations.refused", sequence=listed.sequence,
                              reason=f"revocation list {listed.sequence} (issued {when(listed.issued_at)}) is older "
                                     f"than list {held.revocation_sequence} already accepted; lists never go back")
            return
        held.revocations = signed
        held.revocation_sequence, held.revocation_issued_at = listed.sequence, listed.issued_at
        self.audit.record("revocations.accepted", sequence=listed.sequence, expires_at=listed.expires_at,
                          credentials=len(listed.credentials), documents=len(listed.documents),
                          problem=status.problem or "")

    def _take_documents(self, update: AuthorityUpdate, now: float) -> list[Refusal]:
        """Keep the documents that verify and concern this device; return why the others were refused.

        Held documents are verified again (a new revocation list may have revoked one). A complete
        update replaces what is held; an incremental one adds to it.
        """
        held = self._held
        before = {body_sha256(d.body) for d in held.documents}
        incoming = list(update.documents) if update.complete else [*held.documents, *update.documents]
        # Approver sets first: the documents below are verified under the set they leave in force.
        changes = [d for d in [*held.documents, *update.documents] if d.kind == "approver_set"]
        incoming = [d for d in incoming if d.kind != "approver_set" or _body_or_none(d) is None]
        withdrawn = set(update.withdrawn)
        kept: dict[str, SignedDocument] = {}
        refusals: dict[str, str] = {} if update.complete else dict(held.refused)
        reported = self._take_approver_sets(changes, now)
        refusals.update(reported)
        for document in incoming:
            body = _body_or_none(document)
            doc_id = document_id(body) if body is not None else f"sha256:{body_sha256(document.body)[:16]}"
            if doc_id in withdrawn:
                continue
            verdict = self.verify(document, now)
            if verdict.allowed:
                kept[doc_id] = document
                refusals.pop(doc_id, None)
                if body_sha256(document.body) not in before:
                    self.audit.record("document.accepted", document_id=doc_id, kind=document.kind,
                                      sha256=body_sha256(document.body), approvers=list(verdict.holders))
                continue
            kept.pop(doc_id, None)
            if held.refused.get(doc_id) != verdict.reason:
                self.audit.record("document.refused", document_id=doc_id, kind=document.kind,
                                  sha256=body_sha256(document.body), reason=verdict.reason)
                log.warning("refused a signed document", extra={"document_id": doc_id, "reason": verdict.reason})
            refusals[doc_id] = reported[doc_id] = verdict.reason
        for doc_id in withdrawn:
            if any(document_id(b) == doc_id for b in map(_body_or_none, held.documents) if b is not None):
                self.audit.record("document.withdrawn", document_id=doc_id)
            refusals.pop(doc_id, None)
        held.documents = list(kept.values())[-MAX_DOCUMENTS:]
        held.refused = dict(list(refusals.items())[-MAX_DOCUMENTS:])
        return [Refusal(doc_id[:64], reason[:256]) for doc_id, reason in reported.items()]

    def _take_approver_sets(self, changes: list[SignedDocument], now: float) -> dict[str, str]:
        """Apply each newer approver-set change that verifies, oldest sequence first; return why others were
        refused (each refusal audited once per reason)."""
        held = self._held
        unique = {body_sha256(d.body): d for d in changes}.values()
        decoded = [(body, document) for document in unique
                   if isinstance(body := _body_or_none(document), ApproverSetChange)]
        refused: dict[str, str] = {}
        for body, document in sorted(decoded, key=lambda pair: pair[0].sequence):
            sha = body_sha256(document.body)
            if sha == held.approver_set_sha256:
                continue  # the change in force, delivered again
            if body.sequence <= held.approver_set_sequence:
                reason = (f"approver set change {body.change_id} (sequence {body.sequence}) is not newer than the "
                          f"applied set {held.approver_set_id} (sequence {held.approver_set_sequence}); approver "
                          "sets never go back")
            else:
                verdict = self.verify(document, now)
                if verdict.allowed:
                    held.approver_set, held.approver_set_id = sorted(set(body.approvers)), body.change_id
                    held.approver_set_sequence, held.approver_set_sha256 = body.sequence, sha
                    held.refused.pop(body.change_id, None)
                    self.audit.record("approver_set.applied", document_id=body.change_id, sequence=body.sequence,
                                      approvers=held.approver_set, approved_by=list(verdict.holders), sha256=sha)
                    log.warning("approver set %s (sequence %d) applied: %d approvers count from now on",
                                body.change_id, body.sequence, len(held.approver_set))
                    continue
                reason = verdict.reason
            if held.refused.get(body.change_id) != reason:
                self.audit.record("approver_set.refused", document_id=body.change_id, sequence=body.sequence,
                                  sha256=sha, reason=reason)
                log.warning("refused an approver set change", extra={"document_id": body.change_id,
                                                                       "reason": reason})
            refused[body.change_id] = reason
        return refused

    # --- checks -----------------------------------------------------------------------------------

    def verify(self, document: SignedDocument, now: float) -> Verdict:
        """The whole chain for ``document`` against what this device holds, and that it concerns this device."""
        held = self._held
        problem = self.unattended_problem(now) if held.pin is None or held.root is None else ""
        if problem:
            return Verdict.refuse(problem)
        assert held.pin is not None and held.root is not None
        verdict = verify_chain(document, pinned_root_fingerprint=held.pin, root=held.root, certs=held.certs,
                               revocations=held.revocations, now=now, policy=self.policy,
                               min_revocation_sequence=held.revocation_sequence)
        if verdict.allowed and verdict.body is not None and not concerns(verdict.body, device_id=self.device_id,
                                                                          group=self.group):
            return Verdict.refuse(f"{document.kind} {document_id(verdict.body)} does not concern this device")
        return verdict

    def check_document(self, doc_id: str, now: float, *, kind: str) -> Verdict:
        """May the held document ``doc_id`` (of ``kind``) be honoured now? Verified afresh, every time."""
        problem = self.unattended_problem(now)
        if problem:
            return Verdict.refuse(problem)
        found = self.document(doc_id)
        if found is None:
            earlier = self._held.refused.get(doc_id)
            if earlier:
                return Verdict.refuse(earlier)
            return Verdict.refuse(f"no approver-signed {kind} {doc_id} has reached this device")
        document, _sha = found
        if document.kind != kind:
            return Verdict.refuse(f"document {doc_id} is a {document.kind}, not a {kind}")
        return self.verify(document, now)

    def check_grant(self, doc_id: str, *, action: str, now: float, local: datetime) -> GrantCheck:
        """Does the grant document ``doc_id`` let ``action`` happen on this device now?"""
        verdict = self.check_document(doc_id, now, kind="grant")
        if not verdict.allowed:
            return GrantCheck(verdict)
        grant = verdict.body
        assert isinstance(grant, UnattendedGrant)
        problem = grant_problem(grant, device_id=self.device_id, group=self.group, action=action, now=now,
                                local=local)
        if problem:
            return GrantCheck(Verdict.refuse(problem))
        return GrantCheck(verdict, grant)

    def verify_proof(self, proof: TechnicianProof, grant: UnattendedGrant | TaskAuthorization, *, nonce: str,
                     action: str, now: float) -> Verdict:
        """Did a technician ``grant`` names sign this device's ``nonce`` for ``action``, just now?"""
        held = self._held
        problem = self.unattended_problem(now)
        if problem:
            return Verdict.refuse(problem)
        assert held.pin is not None and held.root is not None
        verdict = verify_technician(proof, grant, nonce=nonce, device_id=self.device_id, action=action, now=now,
                                    pinned_root_fingerprint=held.pin, root=held.root, certs=held.certs,
                                    revocations=held.revocations, policy=self.policy, counters=held.counters,
                                    min_revocation_sequence=held.revocation_sequence)
        if verdict.allowed and verdict.counter and verdict.signers:
            held.counters[verdict.signers[0]] = verdict.counter
            self._save()
        return verdict

    def check_fix(self, doc_id: str, params: dict[str, Any], now: float) -> Verdict:
        """May the person at the device run the self-service fix ``doc_id`` with ``params`` now?

        The held document is verified afresh (chain, revocations, this device), ``params`` must lie within
        its signed limits and its run budget must have room. An allowed verdict takes one run of the budget
        (recorded in the persistent ledger before this returns); every refusal is audited on the device.
        """
        verdict = self.check_document(doc_id, now, kind="fix")
        if verdict.allowed:
            fix = verdict.body
            assert isinstance(fix, SelfServiceFix)
            checked = check_fix_params(fix, params)
            if checked.allowed:
                checked = self.fixes.take(fix, now)
            if not checked.allowed:
                verdict = Verdict.refuse(f"fix {doc_id}: {checked.reason}")
        if not verdict.allowed:
            self.audit.record("fix.refused", document_id=doc_id, reason=verdict.reason)
            log.warning("self-service fix refused", extra={"document_id": doc_id, "reason": verdict.reason})
            return verdict
        self.audit.record("fix.allowed", document_id=doc_id, approvers=list(verdict.holders),
                          params=sorted(params))
        return verdict

    def check_release(self, manifest: SignedDocument, current_version: str, now: float) -> ReleaseCheck:
        """May this device update from ``current_version`` to the release ``manifest`` describes?

        Allowed only for a manifest whose chain verifies from the pinned root (approvers, four-eyes where the
        policy asks, not revoked, not expired) and that is strictly newer than ``current_version``; the answer
        carries the artifact digests every file must match before it is installed. Refusals are audited.
        """
        verdict = (Verdict.refuse(f"a {manifest.kind} document is not a release manifest")
                   if manifest.kind != "release" else self.verify(manifest, now))
        release = verdict.body if verdict.allowed else None
        if isinstance(release, ReleaseManifest):
            problem = release_problem(release, current_version=current_version, now=now,
                                      clock_skew_s=self.policy.clock_skew_s)
            if problem is None:
                self.audit.record("release.allowed", version=release.version, running=current_version,
                                  approvers=list(verdict.holders), sha256=body_sha256(manifest.body))
                return ReleaseCheck(verdict, release, {a.name: a.sha256 for a in release.artifacts},
                                    tuple(release.artifacts))
            verdict = Verdict.refuse(problem)
        self.audit.record("release.refused", running=current_version, sha256=body_sha256(manifest.body),
                          reason=verdict.reason)
        log.warning("release manifest refused", extra={"reason": verdict.reason})
        return ReleaseCheck(verdict)


def _body_or_none(document: SignedDocument) -> Body | None:
    try:
        return decode_body(document.kind, document.body)
    except _DECODE_ERRORS:
        return None


def _rotation_body(rotation: RootRotation) -> RootRotationBody | None:
    try:
        return decode_canonical(rotation.body, RootRotationBody)
    except _DECODE_ERRORS:
        return None


#: Certificates the root did not sign are kept, this many at most, only so that a refusal can say so.
MAX_FOREIGN_CERTS = 64


def _verified_certs(certs: Iterable[SignedCert], root: RootInfo) -> list[SignedCert]:
    """The certificates ``root`` signed (validity and revocation are checked at each use), deduplicated,
    then a few it did not sign: every use verifies the signature again, so these only make a refusal
    say "not signed by this device's root" rather than "no certificate"."""
    kept: dict[str, SignedCert] = {}
    foreign: dict[str, SignedCert] = {}
    for signed in certs:
        if signed.body in kept or signed.body in foreign:
            continue
        if isinstance(verify_cert(signed, root=root), str):
            foreign[signed.body] = signed
        else:
            kept[signed.body] = signed
    return list(kept.values())[-MAX_CERTS:] + list(foreign.values())[:MAX_FOREIGN_CERTS]
