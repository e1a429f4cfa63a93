"""The device's own check of the chain: pinned root → credential certificate → signature (pure).

Nothing here trusts the server: the root must match the fingerprint the device was installed
with, every certificate must carry that root's signature, every approval must verify over the
exact canonical bytes with its certificate's key, and the revocation list must come from a
revoker certificate and still be fresh. Passkey assertions are checked field by field with
python-fido2's parsers (authenticator data, client data, COSE key) — no hand-written CBOR.

Every function takes ``now`` and returns a refused :class:`~protocol.authority.Verdict` with a
reason for anything a peer could have sent; none raises on peer input.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fido2 import cbor
from fido2.cose import CoseKey
from fido2.webauthn import AuthenticatorData, CollectedClientData

from protocol.authority import (
    SIGNER_KINDS,
    AuthorityPolicy,
    Body,
    CredentialCert,
    Ed25519Key,
    Ed25519Signature,
    NotCanonical,
    PasskeyKey,
    RevocationList,
    RootInfo,
    RootRotation,
    RootRotationBody,
    SignedCert,
    SignedDocument,
    SignedKind,
    SignedRevocationList,
    TaskAuthorization,
    TechnicianProof,
    TechnicianStatement,
    UnattendedGrant,
    Verdict,
    WebAuthnAssertion,
    b64decode,
    body_sha256,
    decode_body,
    decode_canonical,
    document_id,
    ed25519_message,
    fingerprint,
    required_approvals,
    users_of,
    webauthn_challenge,
)

_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, NotCanonical)


def when(ts: float) -> str:
    """A timestamp as people read it in reasons (UTC)."""
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return repr(ts)


def normalize_fingerprint(text: str) -> str:
    """Lower-case hex without the colons or spaces people write between pairs."""
    return "".join(c for c in text.lower() if c not in ": \t\n")


def check_root(root: RootInfo, pinned_root_fingerprint: str) -> str | None:
    """None when ``root`` is the pinned one, else why not (computed from the key, not its claim)."""
    raw = b64decode(root.public_key)
    if raw is None or len(raw) != 32:
        return "the root's public key is not an Ed25519 key"
    actual = fingerprint(raw)
    pinned = normalize_fingerprint(pinned_root_fingerprint)
    if not hmac.compare_digest(actual.encode(), pinned.encode()):
        return f"root {actual[:16]}… is not the root this device was installed with ({pinned[:16]}…)"
    return None


def _root_key(root: RootInfo) -> Ed25519PublicKey | None:
    raw = b64decode(root.public_key)
    try:
        return Ed25519PublicKey.from_public_bytes(raw) if raw is not None else None
    except ValueError:
        return None


#: Signatures already found good, by a digest of (key, signature, message): a device re-walks a held grant's
#: whole chain every second of an unattended session (agent.sessions: the grant is checked afresh against the
#: clock, the revocation list and the certificates it holds); its eight Ed25519 checks were about half of the
#: walk's ~2 ms (cProfile of a typing session). A verification is a pure function of those three, so
#: remembering a success changes no answer; failures are not kept (whatever a peer sends cannot fill this).
_VERIFIED_MAX = 256
_verified: OrderedDict[bytes, None] = OrderedDict()
_verified_lock = threading.Lock()


def _ed25519_ok(public_key: Ed25519PublicKey, signature_b64: str, message: bytes) -> bool:
    signature = b64decode(signature_b64)
    if signature is None:
        return False
    digest = hashlib.sha256()
    for part in (public_key.public_bytes_raw(), signature, message):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    seen = digest.digest()
    with _verified_lock:
        if seen in _verified:
            _verified.move_to_end(seen)
            return True
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    with _verified_lock:
        _verified[seen] = None
        if len(_verified) > _VERIFIED_MAX:
            _verified.popitem(last=False)
    return True


# --- certificates -------------------------------------------------------------------------------


def verify_cert(signed: SignedCert, *, root: RootInfo) -> CredentialCert | str:
    """The certificate if ``root`` signed it (validity in time is checked separately), else why not."""
    key = _root_key(root)
    if key is None:
        return "the root's public key is not an Ed25519 key"
    body = signed.body.encode()
    if not _ed25519_ok(key, signed.signature, ed25519_message("credential", body)):
        return "certificate is not signed by this device's root"
    try:
        cert = decode_canonical(signed.body, CredentialCert)
    except _DECODE_ERRORS as exc:
        return f"certificate is invalid: {exc}"
    if cert.root_fingerprint != root.fingerprint:
        return "certificate names another root"
    return cert


def find_cert(credential_id: str, certs: Sequence[SignedCert], *, root: RootInfo) -> CredentialCert | str:
    """The root-signed certificate of ``credential_id`` among ``certs`` (newest issued first), else why not."""
    found: list[CredentialCert] = []
    problem = f"no certificate for credential {credential_id}"
    for signed in certs:
        try:  # cheap filter before the signature check: only certificates that name this id
            claimed = decode_canonical(signed.body, CredentialCert)
        except _DECODE_ERRORS:
            continue
        if claimed.credential_id != credential_id:
            continue
        verified = verify_cert(signed, root=root)
        if isinstance(verified, str):
            problem = f"credential {credential_id}: {verified}"
        else:
            found.append(verified)
    if not found:
        return problem
    return max(found, key=lambda c: c.issued_at)


def cert_problem(cert: CredentialCert, *, now: float, revoked: frozenset[str], allowed_kinds: frozenset[str],
                 purpose: str) -> str | None:
    """None when ``cert`` may sign for ``purpose`` at ``now``, else why not."""
    who = f"{cert.kind} credential {cert.credential_id} ({cert.holder})"
    if not math.isfinite(now):
        return "the clock is not a finite number"
    if cert.kind not in allowed_kinds:
        return f"{who} cannot sign {purpose}; needs {' or '.join(sorted(allowed_kinds))}"
    if now < cert.not_before:
        return f"{who} is not valid before {when(cert.not_before)}"
    if now >= cert.not_after:
        return f"{who} expired at {when(cert.not_after)}"
    if cert.credential_id in revoked:
        return f"{who} has been revoked"
    return None


# --- signatures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureCheck:
    """A signature's outcome: ``problem`` is None when it verified; ``counter`` for passkeys."""

    problem: str | None
    counter: int | None = None


def verify_signature(kind: SignedKind, body: bytes, signature: Ed25519Signature | WebAuthnAssertion,
                     cert: CredentialCert, *, require_user_verification: bool) -> SignatureCheck:
    """Does ``signature`` by ``cert``'s key cover exactly ``body`` as a ``kind``?"""
    key = cert.public_key
    if isinstance(signature, Ed25519Signature):
        if not isinstance(key, Ed25519Key):
            return SignatureCheck(f"credential {cert.credential_id} is a passkey but sent an Ed25519 signature")
        try:
            public = Ed25519PublicKey.from_public_bytes(key.key_bytes())
        except ValueError:
            return SignatureCheck(f"credential {cert.credential_id} has an unusable Ed25519 key")
        if not _ed25519_ok(public, signature.signature, ed25519_message(kind, body)):
            return SignatureCheck(f"signature of {cert.credential_id} ({cert.holder}) does not verify over this {kind}")
        return SignatureCheck(None)
    if not isinstance(key, PasskeyKey):
        return SignatureCheck(f"credential {cert.credential_id} is an Ed25519 key but sent a WebAuthn assertion")
    return _verify_webauthn(kind, body, signature, key, cert, require_user_verification)


#: COSE algorithms a passkey certificate may carry: ES256 (required by the issue) and EdDSA.
COSE_ALGORITHMS: frozenset[int] = frozenset({-7, -8})


def parse_cose_key(data: bytes) -> CoseKey | None:
    """python-fido2's COSE key from its CBOR bytes, if it is one of :data:`COSE_ALGORITHMS`."""
    try:
        decoded = cbor.decode(data)  # type: ignore[no-untyped-call]
        if not isinstance(decoded, Mapping) or decoded.get(3) not in COSE_ALGORITHMS:
            return None
        return CoseKey.parse(decoded)
    except Exception:  # fido2's CBOR decoder raises assorted types on garbage
        return None


def _verify_webauthn(kind: SignedKind, body: bytes, assertion: WebAuthnAssertion, key: PasskeyKey,
                     cert: CredentialCert, require_user_verification: bool) -> SignatureCheck:
    who = f"passkey {cert.credential_id} ({cert.holder})"
    auth_raw = b64decode(assertion.authenticator_data)
    client_raw = b64decode(assertion.client_data_json)
    signature = b64decode(assertion.signature)
    if auth_raw is None or client_raw is None or signature is None:
        return SignatureCheck(f"{who}: assertion fields are not base64")
    # fido2's parsers raise assorted exception types (ValueError, KeyError, struct.error, …) on
    # garbage; any of them means a malformed assertion from a peer, never a crash here.
    try:
        auth = AuthenticatorData(auth_raw)
    except Exception:
        return SignatureCheck(f"{who}: authenticatorData is malformed")
    try:
        client = CollectedClientData(client_raw)
    except Exception:
        return SignatureCheck(f"{who}: clientDataJSON is malformed")
    if not hmac.compare_digest(auth.rp_id_hash, hashlib.sha256(key.rp_id.encode()).digest()):
        return SignatureCheck(f"{who}: assertion is for another relying party than {key.rp_id!r} (rpIdHash)")
    if not auth.is_user_present():
        return SignatureCheck(f"{who}: the user-present flag (UP) is not set")
    if require_user_verification and not auth.is_user_verified():
        return SignatureCheck(f"{who}: the user-verified flag (UV) is not set and this device's policy requires it")
    if client.type != CollectedClientData.TYPE.GET.value:
        return SignatureCheck(f"{who}: clientDataJSON type is {client.type!r:.80}, not 'webauthn.get'")
    if not isinstance(client.challenge, bytes) or not hmac.compare_digest(
            client.challenge, webauthn_challenge(kind, body)):
        return SignatureCheck(f"{who}: the assertion's challenge is not this {kind}")
    if not isinstance(client.origin, str) or client.origin not in key.origins:
        return SignatureCheck(f"{who}: origin {client.origin!r:.100} is not one this passkey was certified for")
    if client.cross_origin is not False:
        return SignatureCheck(f"{who}: cross-origin assertions are refused")
    cose = parse_cose_key(key.key_bytes())
    if cose is None:
        return SignatureCheck(f"{who}: the certified COSE key is unusable")
    try:
        cose.verify(auth_raw + client.hash, signature)
    except InvalidSignature:
        return SignatureCheck(f"{who}: the assertion's signature does not verify")
    except Exception:  # unsupported algorithm or curve, malformed DER signature
        return SignatureCheck(f"{who}: the assertion's signature cannot be checked with the certified key")
    return SignatureCheck(None, int(auth.counter))


# --- revocation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevocationStatus:
    """A verified list (None if none usable) and why it is not fresh (None when it is)."""

    revocations: RevocationList | None
    problem: str | None

    @property
    def credentials(self) -> frozenset[str]:
        return frozenset(self.revocations.credentials) if self.revocations else frozenset()

    @property
    def documents(self) -> frozenset[str]:
        return frozenset(self.revocations.documents) if self.revocations else frozenset()


def verify_revocation_list(signed: SignedRevocationList | None, *, root: RootInfo, certs: Sequence[SignedCert],
                           now: float, policy: AuthorityPolicy, min_sequence: int = 0) -> RevocationStatus:
    """Check who signed the list and whether it is still fresh.

    A list with a valid signature is returned even when stale: applying more revocations is
    always safe. ``problem`` says why it cannot vouch for the present (missing, stale, too long,
    older than one seen before); callers fail closed on it for unattended access.
    """
    if signed is None:
        return RevocationStatus(None, "no revocation list from a revoker has reached this device")
    if not math.isfinite(now):
        return RevocationStatus(None, "the clock is not a finite number")
    cert = find_cert(signed.approval.credential_id, certs, root=root)
    if isinstance(cert, str):
        return RevocationStatus(None, f"revocation list refused: {cert}")
    try:
        listed = decode_canonical(signed.body, RevocationList)
    except _DECODE_ERRORS as exc:
        return RevocationStatus(None, f"revocation list is invalid: {exc}")
    problem = cert_problem(cert, now=now, revoked=frozenset(), allowed_kinds=SIGNER_KINDS["revocation_list"],
                           purpose="revocation lists")
    if problem is None:
        problem = verify_signature("revocation_list", signed.body.encode(), signed.approval.signature, cert,
                                   require_user_verification=policy.require_user_verification).problem
    if problem is not None:
        return RevocationStatus(None, f"revocation list refused: {problem}")
    if listed.issued_at > now + policy.clock_skew_s:
        return RevocationStatus(listed, f"revocation list is issued in the future ({when(listed.issued_at)})")
    if now >= listed.expires_at:
        return RevocationStatus(listed, f"revocation list is stale (expired at {when(listed.expires_at)})")
    if listed.expires_at - listed.issued_at > policy.max_revocation_validity_s:
        hours = policy.max_revocation_validity_s / 3600
        return RevocationStatus(listed, f"revocation list is valid for longer than this device allows ({hours:g} h)")
    if listed.sequence < min_sequence:
        return RevocationStatus(listed, f"revocation list {listed.sequence} is older than list {min_sequence} "
                                        "already seen")
    return RevocationStatus(listed, None)


# --- documents ----------------------------------------------------------------------------------


def _expiry_problem(kind: str, body: Body, now: float, policy: AuthorityPolicy) -> str | None:
    not_after = getattr(body, "not_after", None)
    if isinstance(not_after, float) and now >= not_after:
        return f"{kind} {document_id(body)} expired at {when(not_after)}"
    if isinstance(body, UnattendedGrant):
        lifetime = body.not_after - body.not_before
        if lifetime > policy.max_grant_lifetime_s:
            return (f"grant {body.grant_id} lasts {lifetime / 86400:g} days; this device honours grants of at most "
                    f"{policy.max_grant_lifetime_s / 86400:g} days")
    return None


def _user_holders(body: Body, certs: Sequence[SignedCert], root: RootInfo) -> frozenset[str] | str:
    """Casefolded holders of everyone the body lets act, or why they cannot be known (fail closed)."""
    ids, names = users_of(body)
    holders = set(names)
    for credential_id in sorted(ids):
        cert = find_cert(credential_id, certs, root=root)
        if isinstance(cert, str):
            return f"the document names technician credential {credential_id}, whose holder is unknown here: {cert}"
        holders.add(cert.holder.casefold())
    return frozenset(holders)


def verify_chain(document: SignedDocument, *, pinned_root_fingerprint: str, root: RootInfo,
                 certs: Sequence[SignedCert], revocations: SignedRevocationList | None, now: float,
                 policy: AuthorityPolicy, min_revocation_sequence: int = 0) -> Verdict:
    """May this device honour ``document``? Checks everything from the pinned root to the approvals.

    Allowed means: authentic, approved by enough distinct approvers who are not its users, not
    revoked, not expired, within the grant cap. Scope (this device, this action, this window) is
    for the caller to check on ``Verdict.body``.
    """
    if not math.isfinite(now):
        return Verdict.refuse("the clock is not a finite number")
    problem = check_root(root, pinned_root_fingerprint)
    if problem:
        return Verdict.refuse(problem)
    kind = document.kind
    try:
        body = decode_body(kind, document.body)
    except _DECODE_ERRORS as exc:
        return Verdict.refuse(f"{kind} document is invalid: {exc}")
    doc_id = document_id(body)
    status = verify_revocation_list(revocations, root=root, certs=certs, now=now, policy=policy,
                                    min_sequence=min_revocation_sequence)
    if status.problem and kind in policy.fresh_revocations_for:
        return Verdict.refuse(status.problem)
    if doc_id in status.documents or body_sha256(document.body) in status.documents:
        return Verdict.refuse(f"{kind} {doc_id} has been revoked")
    problem = _expiry_problem(kind, body, now, policy)
    if problem:
        return Verdict.refuse(problem)
    users = _user_holders(body, certs, root)
    if isinstance(users, str):
        return Verdict.refuse(users)
    user_ids, _ = users_of(body)
    allowed_kinds = SIGNER_KINDS[kind] | ({"automation"} if kind in policy.automation_kinds else frozenset())
    body_bytes = document.body.encode()
    signers: dict[str, str] = {}  # casefolded holder → credential id (one vote per person)
    display: dict[str, str] = {}
    for approval in document.approvals:
        cert = find_cert(approval.credential_id, certs, root=root)
        if isinstance(cert, str):
            return Verdict.refuse(f"approval refused: {cert}")
        problem = cert_problem(cert, now=now, revoked=status.credentials, allowed_kinds=allowed_kinds,
                               purpose=f"a {kind}")
        if problem:
            return Verdict.refuse(f"approval refused: {problem}")
        if policy.approver_set is not None and cert.credential_id not in policy.approver_set:
            return Verdict.refuse(f"approval refused: {cert.holder} ({cert.credential_id}) is not in the current "
                                  "approver set")
        if cert.credential_id in user_ids or cert.holder.casefold() in users:
            return Verdict.refuse(f"approval refused: {cert.holder} is named as a user of {kind} {doc_id} and "
                                  "cannot approve it")
        check = verify_signature(kind, body_bytes, approval.signature, cert,
                                 require_user_verification=policy.require_user_verification)
        if check.problem:
            return Verdict.refuse(f"approval refused: {check.problem}")
        signers.setdefault(cert.holder.casefold(), cert.credential_id)
        display.setdefault(cert.holder.casefold(), cert.holder)
    needed = required_approvals(kind, body, policy)
    if len(signers) < needed:
        duplicate = " (the same person signed more than once)" if len(document.approvals) > len(signers) else ""
        return Verdict.refuse(f"{kind} {doc_id} needs {needed} distinct approvers, has {len(signers)}{duplicate}")
    holders = tuple(display.values())
    return Verdict(True, f"{kind} {doc_id} approved by {', '.join(holders)}", body=body,
                   signers=tuple(signers.values()), holders=holders)


# --- technician proof ---------------------------------------------------------------------------


def verify_technician(proof: TechnicianProof, grant: UnattendedGrant | TaskAuthorization, *, nonce: str,
                      device_id: str, action: str, now: float, pinned_root_fingerprint: str, root: RootInfo,
                      certs: Sequence[SignedCert], revocations: SignedRevocationList | None,
                      policy: AuthorityPolicy, counters: Mapping[str, int] | None = None,
                      min_revocation_sequence: int = 0) -> Verdict:
    """Did a technician the (already verified) ``grant`` names sign this device's fresh ``nonce``, just now?

    ``nonce`` is the one this device issued for this attempt (the caller retires it after use).
    ``counters`` holds passkey signature counters seen before; a counter that did not grow is
    refused (a cloned authenticator). The verdict's ``counter`` is the one to remember.
    """
    if not math.isfinite(now):
        return Verdict.refuse("the clock is not a finite number")
    problem = check_root(root, pinned_root_fingerprint)
    if problem:
        return Verdict.refuse(problem)
    kind = "grant" if isinstance(grant, UnattendedGrant) else "task"
    doc_id = document_id(grant)
    status = verify_revocation_list(revocations, root=root, certs=certs, now=now, policy=policy,
                                    min_sequence=min_revocation_sequence)
    if status.problem and kind in policy.fresh_revocations_for:
        return Verdict.refuse(status.problem)
    if doc_id in status.documents:
        return Verdict.refuse(f"{kind} {doc_id} has been revoked")
    try:
        statement = decode_canonical(proof.body, TechnicianStatement)
    except _DECODE_ERRORS as exc:
        return Verdict.refuse(f"technician proof is invalid: {exc}")
    if not hmac.compare_digest(statement.nonce.encode(), nonce.encode()):
        return Verdict.refuse("technician proof is for another nonce (replayed or stale)")
    if statement.device_id != device_id:
        return Verdict.refuse("technician proof is for another device")
    if statement.action != action:
        return Verdict.refuse(f"technician proof is for {statement.action!r}, not {action!r}")
    if statement.document_id != doc_id:
        return Verdict.refuse(f"technician proof is for {statement.document_id}, not {kind} {doc_id}")
    permitted = grant.actions if isinstance(grant, UnattendedGrant) else ["tasks"]
    if action not in permitted:
        return Verdict.refuse(f"{kind} {doc_id} does not allow {action!r}")
    if statement.signed_at > now + policy.clock_skew_s:
        return Verdict.refuse(f"technician proof is signed in the future ({when(statement.signed_at)})")
    if now - statement.signed_at > policy.proof_max_age_s:
        return Verdict.refuse(f"technician proof is stale (signed at {when(statement.signed_at)})")
    cert = find_cert(proof.approval.credential_id, certs, root=root)
    if isinstance(cert, str):
        return Verdict.refuse(f"technician refused: {cert}")
    problem = cert_problem(cert, now=now, revoked=status.credentials, allowed_kinds=SIGNER_KINDS["technician_proof"],
                           purpose="technician proofs")
    if problem:
        return Verdict.refuse(f"technician refused: {problem}")
    ids, names = users_of(grant)
    if cert.credential_id not in ids and cert.holder.casefold() not in names:
        return Verdict.refuse(f"technician {cert.holder} ({cert.credential_id}) is not named in {kind} {doc_id}")
    check = verify_signature("technician_proof", proof.body.encode(), proof.approval.signature, cert,
                             require_user_verification=policy.require_user_verification)
    if check.problem:
        return Verdict.refuse(f"technician refused: {check.problem}")
    seen = (counters or {}).get(cert.credential_id)
    if check.counter and seen is not None and check.counter <= seen:
        return Verdict.refuse(f"technician refused: passkey {cert.credential_id}'s signature counter did not grow "
                              "(a cloned authenticator?)")
    return Verdict(True, f"technician {cert.holder} verified", body=grant, signers=(cert.credential_id,),
                   holders=(cert.holder,), counter=check.counter)


# --- root rotation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RotationVerdict:
    """Whether to move the pin to ``new_root``."""

    allowed: bool
    reason: str
    new_root: RootInfo | None = None


def verify_rotation(rotation: RootRotation, *, pinned_root_fingerprint: str, root: RootInfo, now: float,
                    policy: AuthorityPolicy) -> RotationVerdict:
    """Is ``rotation`` the pinned ``root`` handing over to a new root? Then pin the new one."""
    problem = check_root(root, pinned_root_fingerprint)
    if problem:
        return RotationVerdict(False, problem)
    key = _root_key(root)
    if key is None or not _ed25519_ok(key, rotation.signature, ed25519_message("root_rotation",
                                                                                rotation.body.encode())):
        return RotationVerdict(False, "root rotation is not signed by the pinned root")
    try:
        body = decode_canonical(rotation.body, RootRotationBody)
    except _DECODE_ERRORS as exc:
        return RotationVerdict(False, f"root rotation is invalid: {exc}")
    if body.previous_fingerprint != root.fingerprint:
        return RotationVerdict(False, "root rotation hands over from another root")
    if not math.isfinite(now) or body.issued_at > now + policy.clock_skew_s:
        return RotationVerdict(False, f"root rotation is issued in the future ({when(body.issued_at)})")
    return RotationVerdict(True, f"root {root.fingerprint[:16]}… hands over to {body.new_root.fingerprint[:16]}…",
                           body.new_root)
