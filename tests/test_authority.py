"""The device-side trust chain: pinned root → certificate → approvals, revocation, technician proof.

Every refusal case starts from a document the positive control accepts and breaks one thing, so
each would pass if its check were missing. Passkey assertions come from a software
authenticator (P-256 keys from ``cryptography``, python-fido2's data classes), real bytes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fido2 import cbor
from fido2.cose import ES256
from fido2.webauthn import AuthenticatorData, CollectedClientData
from hypothesis import given, settings
from hypothesis import strategies as st

from certs import ceremony
from certs.authority import verify_chain, verify_revocation_list, verify_rotation, verify_technician
from protocol.authority import (
    Approval,
    ApproverSetChange,
    AuthorityPolicy,
    CredentialCert,
    CredentialKind,
    Ed25519Key,
    Ed25519Signature,
    ParamLimit,
    RevocationList,
    RootRotation,
    RootRotationBody,
    RunBudget,
    SelfServiceFix,
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
    b64encode,
    canonical_bytes,
    check_fix_params,
    check_occurrence,
    check_run_budget,
    decode_body,
    ed25519_message,
    new_document,
    occurrence_key,
    webauthn_challenge,
)

#: A fixed instant (tests never read the wall clock for documents; nothing expires mid-run).
NOW = 1_750_000_000.0
DAY = 86400.0
RP_ID = "helpline.example"
ORIGIN = "https://helpline.example:8444"
UP, UV = AuthenticatorData.FLAG.UP, AuthenticatorData.FLAG.UV


class SoftAuthenticator:
    """A passkey in software: a P-256 key, a counter, and assertions built from fido2's data classes."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        cose = ES256.from_cryptography_key(self.key.public_key())  # type: ignore[no-untyped-call]
        self.cose_bytes = cbor.encode(dict(cose))
        self.webauthn_id = ceremony.webauthn_id_of(secrets.token_bytes(16))
        self.counter = 0

    def assertion(self, challenge: bytes, *, rp_id: str = RP_ID, flags: AuthenticatorData.FLAG = UP | UV,
                  type: str = "webauthn.get", origin: str = ORIGIN, cross_origin: bool = False,
                  signer: ec.EllipticCurvePrivateKey | None = None, counter: int | None = None) -> WebAuthnAssertion:
        self.counter = self.counter + 1 if counter is None else counter
        auth = AuthenticatorData.create(hashlib.sha256(rp_id.encode()).digest(), flags, self.counter)
        client = CollectedClientData.create(type=type, challenge=challenge, origin=origin, cross_origin=cross_origin)
        signature = (signer or self.key).sign(bytes(auth) + client.hash, ec.ECDSA(hashes.SHA256()))
        return WebAuthnAssertion(authenticator_data=b64encode(bytes(auth)), client_data_json=b64encode(bytes(client)),
                                 signature=b64encode(signature))


@dataclass
class World:
    """An org: root, credentials (Ed25519 keys or soft passkeys by holder), a fresh revocation list."""

    root_key: Ed25519PrivateKey
    root: Any
    certs: list[SignedCert] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    passkeys: dict[str, SoftAuthenticator] = field(default_factory=dict)
    revocations: SignedRevocationList | None = None
    policy: AuthorityPolicy = field(default_factory=AuthorityPolicy)

    def certify(self, label: str, kind: CredentialKind, holder: str, *, passkey: bool = False,
                not_before: float = NOW - DAY, not_after: float = NOW + 30 * DAY,
                root_key: Ed25519PrivateKey | None = None) -> str:
        if passkey:
            soft = SoftAuthenticator()
            self.passkeys[label] = soft
            public: Any = ceremony.passkey_key(soft.cose_bytes, rp_id=RP_ID, webauthn_id=soft.webauthn_id,
                                               origins=[ORIGIN])
        else:
            self.keys[label] = ceremony.generate_key()
            public = Ed25519Key(raw=b64encode(ceremony.raw_public(self.keys[label])))
        cert = CredentialCert(credential_id=ceremony.new_credential_id(), kind=kind, holder=holder, public_key=public,
                              root_fingerprint=self.root.fingerprint, not_before=not_before, not_after=not_after,
                              issued_at=NOW - DAY)
        self.certs.append(ceremony.sign_cert(root_key or self.root_key, cert))
        self.ids[label] = cert.credential_id
        return cert.credential_id

    def sign(self, label: str, kind: SignedKind, body: str, **assertion: Any) -> Approval:
        """``label``'s approval of ``body`` as a ``kind``: Ed25519, or a passkey assertion."""
        if label in self.passkeys:
            challenge = assertion.pop("challenge", webauthn_challenge(kind, body.encode()))
            return Approval(credential_id=self.ids[label],
                            signature=self.passkeys[label].assertion(challenge, **assertion))
        return ceremony.ed25519_approval(self.keys[label], self.ids[label], kind, body.encode())

    def revoke(self, *, credentials: tuple[str, ...] = (), documents: tuple[str, ...] = (), signer: str = "revoker",
               issued_at: float = NOW - 3600, expires_at: float = NOW + 3600, sequence: int = 1) -> None:
        listed = RevocationList(sequence=sequence, issued_at=issued_at, expires_at=expires_at,
                                credentials=list(credentials), documents=list(documents))
        body = canonical_bytes(listed).decode()
        self.revocations = SignedRevocationList(body=body, approval=self.sign(signer, "revocation_list", body))

    def check(self, document: SignedDocument, **overrides: Any) -> Verdict:
        args: dict[str, Any] = dict(pinned_root_fingerprint=self.root.fingerprint, root=self.root, certs=self.certs,
                                    revocations=self.revocations, now=NOW, policy=self.policy)
        args.update(overrides)
        return verify_chain(document, **args)


def make_world() -> World:
    root_key = ceremony.generate_key()
    world = World(root_key, ceremony.new_root(root_key, name="Example Org", now=NOW - 10 * DAY))
    world.certify("alice", "approver", "Alice")
    world.certify("bob", "approver", "Bob")
    world.certify("carol", "approver", "Carol", passkey=True)
    world.certify("alice2", "approver", "alice")  # a second credential of the same person
    world.certify("dave", "technician", "Dave")
    world.certify("erin", "technician", "Erin", passkey=True)
    world.certify("bot", "automation", "CI release bot")
    world.certify("revoker", "revoker", "Security desk")
    world.certify("old", "approver", "Olga", not_after=NOW - 1)
    world.certify("early", "approver", "Ernst", not_before=NOW + DAY)
    world.revoke()
    return world


@pytest.fixture
def world() -> World:
    return make_world()


def grant_body(world: World, **changes: Any) -> UnattendedGrant:
    fields: dict[str, Any] = dict(grant_id="grant-0001", devices=["dev-1"], technicians=[world.ids["dave"]],
                                  technician_names=["Erin"], actions=["view", "control"], not_before=NOW - 3600,
                                  not_after=NOW + 7 * DAY, issuer="Alice", issued_at=NOW - 3600, reason="night work")
    fields.update(changes)
    return UnattendedGrant(**fields)


def signed(world: World, kind: Any, body: Any, *signers: str) -> SignedDocument:
    document = new_document(kind, body)
    return replace_approvals(document, [world.sign(s, kind, document.body) for s in signers])


def replace_approvals(document: SignedDocument, approvals: list[Approval]) -> SignedDocument:
    return SignedDocument(kind=document.kind, body=document.body, approvals=approvals)


# --- positive controls ------------------------------------------------------------------------------


def test_device_grant_with_one_approver_is_allowed(world: World) -> None:
    """The baseline every refusal below breaks one thing of: a device grant signed by one approver."""
    verdict = world.check(signed(world, "grant", grant_body(world), "alice"))
    assert verdict.allowed, verdict.reason
    assert verdict.holders == ("Alice",) and isinstance(verdict.body, UnattendedGrant)


def test_group_grant_with_two_approvers_incl_passkey_is_allowed(world: World) -> None:
    """Four-eyes: an Ed25519 approver and a passkey approver (distinct people) allow a group grant."""
    verdict = world.check(signed(world, "grant", grant_body(world, devices=[], groups=["lab"]), "alice", "carol"))
    assert verdict.allowed, verdict.reason
    assert set(verdict.signers) == {world.ids["alice"], world.ids["carol"]}


def test_script_task_with_two_approvers_is_allowed(world: World) -> None:
    """A script task signed by two approvers verifies; the decoded body is returned."""
    verdict = world.check(signed(world, "task", task_body(), "alice", "bob"))
    assert verdict.allowed, verdict.reason
    assert isinstance(verdict.body, TaskAuthorization) and verdict.body.script_sha256 == "ab" * 32


def task_body(**changes: Any) -> TaskAuthorization:
    fields: dict[str, Any] = dict(task_id="task-0001", action="script", script_sha256="ab" * 32,
                                  params={"b": 1, "a": [1.5, "x"]}, devices=["dev-1"], not_before=NOW - 3600,
                                  not_after=NOW + DAY, issuer="Alice", issued_at=NOW - 3600)
    fields.update(changes)
    return TaskAuthorization(**fields)


# --- refusals of documents --------------------------------------------------------------------------

Case = Callable[[World], Verdict]


def _wrong_pin(w: World) -> Verdict:
    return w.check(signed(w, "grant", grant_body(w), "alice"), pinned_root_fingerprint="00" * 32)


def _root_substituted(w: World) -> Verdict:
    """The server hands over another root (with certificates it made); the pin still refuses it."""
    other = make_world()
    return other.check(signed(other, "grant", grant_body(other), "alice"), pinned_root_fingerprint=w.root.fingerprint)


def _cert_from_other_root(w: World) -> Verdict:
    w.certify("mallory", "approver", "Mallory", root_key=ceremony.generate_key())
    return w.check(signed(w, "grant", grant_body(w), "mallory"))


def _expired_cert(w: World) -> Verdict:
    return w.check(signed(w, "grant", grant_body(w), "old"))


def _not_yet_valid_cert(w: World) -> Verdict:
    return w.check(signed(w, "grant", grant_body(w), "early"))


def _revoked_cert(w: World) -> Verdict:
    w.revoke(credentials=(w.ids["alice"],))
    return w.check(signed(w, "grant", grant_body(w), "alice"))


def _revoker_as_approver(w: World) -> Verdict:
    return w.check(signed(w, "grant", grant_body(w), "revoker"))


def _technician_as_approver(w: World) -> Verdict:
    return w.check(signed(w, "grant", grant_body(w, technicians=[], technician_names=["Erin"]), "dave"))


def _automation_by_default(w: World) -> Verdict:
    return w.check(signed(w, "grant", grant_body(w), "bot"))


def _approver_as_revoker(w: World) -> Verdict:
    w.revoke(signer="alice")
    return w.check(signed(w, "grant", grant_body(w), "bob"))


def _one_of_two_for_groups(w: World) -> Verdict:
    return w.check(signed(w, "grant", grant_body(w, devices=[], groups=["lab"]), "alice"))


def _one_of_two_for_scripts(w: World) -> Verdict:
    return w.check(signed(w, "task", task_body(), "alice"))


def _same_approver_twice(w: World) -> Verdict:
    document = new_document("grant", grant_body(w, devices=[], groups=["lab"]))
    approval = w.sign("alice", "grant", document.body)
    return w.check(replace_approvals(document, [approval, approval]))


def _same_holder_two_credentials(w: World) -> Verdict:
    return w.check(signed(w, "grant", grant_body(w, devices=[], groups=["lab"]), "alice", "alice2"))


def _own_technician_by_name(w: World) -> Verdict:
    return w.check(signed(w, "grant", grant_body(w, technician_names=["Bob"]), "bob"))


def _own_technician_by_credential(w: World) -> Verdict:
    """Bob approves a grant naming Bob's technician credential (another credential, same holder)."""
    w.certify("bob_tech", "technician", "bob")
    return w.check(signed(w, "grant", grant_body(w, technicians=[w.ids["bob_tech"]], technician_names=[]), "bob"))


def _unknown_technician_credential(w: World) -> Verdict:
    """The server withholds a named technician's certificate to hide who it is: fail closed."""
    return w.check(signed(w, "grant", grant_body(w, technicians=["unknown-cred-1"]), "alice"))


def _tampered_body(w: World) -> Verdict:
    document = signed(w, "grant", grant_body(w), "alice")
    longer = canonical_bytes(grant_body(w, not_after=NOW + 9 * DAY)).decode()
    return w.check(SignedDocument(kind="grant", body=longer, approvals=document.approvals))


def _non_canonical_body(w: World) -> Verdict:
    """Same meaning, other bytes (a duplicate key a second parser could read differently)."""
    body = canonical_bytes(grant_body(w)).decode()
    twisted = '{"grant_id":"grant-0001",' + body[1:]
    return w.check(SignedDocument(kind="grant", body=twisted, approvals=[w.sign("alice", "grant", twisted)]))


def _signature_of_other_kind(w: World) -> Verdict:
    """Alice signed these exact bytes as a task: the signature cannot be replayed as a grant."""
    document = new_document("grant", grant_body(w))
    approval = ceremony.ed25519_approval(w.keys["alice"], w.ids["alice"], "task", document.body.encode())
    return w.check(replace_approvals(document, [approval]))


def _passkey_signature_of_other_kind(w: World) -> Verdict:
    document = new_document("grant", grant_body(w))
    assertion = w.passkeys["carol"].assertion(webauthn_challenge("task", document.body.encode()))
    return w.check(replace_approvals(document, [Approval(credential_id=w.ids["carol"], signature=assertion)]))


def _signature_by_other_key(w: World) -> Verdict:
    document = new_document("grant", grant_body(w))
    approval = ceremony.ed25519_approval(ceremony.generate_key(), w.ids["alice"], "grant", document.body.encode())
    return w.check(replace_approvals(document, [approval]))


def _grant_over_cap(w: World) -> Verdict:
    return w.check(signed(w, "grant", grant_body(w, not_after=NOW + 45 * DAY), "alice"))


def _expired_grant(w: World) -> Verdict:
    return w.check(signed(w, "grant", grant_body(w, not_before=NOW - 2 * DAY, not_after=NOW - DAY), "alice"))


def _revoked_document(w: World) -> Verdict:
    w.revoke(documents=("grant-0001",))
    return w.check(signed(w, "grant", grant_body(w), "alice"))


def _stale_revocations(w: World) -> Verdict:
    w.revoke(issued_at=NOW - 2 * DAY, expires_at=NOW - DAY)
    return w.check(signed(w, "grant", grant_body(w), "alice"))


def _missing_revocations(w: World) -> Verdict:
    w.revocations = None
    return w.check(signed(w, "grant", grant_body(w), "alice"))


def _revocations_too_long(w: World) -> Verdict:
    w.revoke(issued_at=NOW - 3600, expires_at=NOW + 30 * DAY)
    return w.check(signed(w, "grant", grant_body(w), "alice"))


def _revocations_rolled_back(w: World) -> Verdict:
    w.revoke(sequence=4)
    return w.check(signed(w, "grant", grant_body(w), "alice"), min_revocation_sequence=5)


def _forged_revocations(w: World) -> Verdict:
    """A list whose signature does not verify is no list at all."""
    w.revoke()
    assert w.revocations is not None
    later = RevocationList(sequence=2, issued_at=NOW - 60, expires_at=NOW + 3600)
    w.revocations = SignedRevocationList(body=canonical_bytes(later).decode(), approval=w.revocations.approval)
    return w.check(signed(w, "grant", grant_body(w), "alice"))


def _outside_approver_set(w: World) -> Verdict:
    w.policy = AuthorityPolicy(approver_set=frozenset({w.ids["bob"]}))
    return w.check(signed(w, "grant", grant_body(w), "alice"))


def _approver_set_needs_two(w: World) -> Verdict:
    change = ApproverSetChange(change_id="set-2", sequence=2, approvers=[w.ids["alice"]], issued_at=NOW)
    return w.check(signed(w, "approver_set", change, "alice"))


def _wrong_kind_field(w: World) -> Verdict:
    """A grant body relabelled as a task fails to decode as one."""
    document = signed(w, "grant", grant_body(w), "alice")
    return w.check(SignedDocument(kind="task", body=document.body, approvals=document.approvals))


def _passkey(**assertion: Any) -> Case:
    def case(w: World) -> Verdict:
        document = new_document("grant", grant_body(w))
        return w.check(replace_approvals(document, [w.sign("carol", "grant", document.body, **dict(assertion))]))
    return case


def _passkey_other_signer(w: World) -> Verdict:
    return _passkey(signer=ec.generate_private_key(ec.SECP256R1()))(w)


REFUSALS: list[tuple[str, Case, str]] = [
    ("wrong pinned root", _wrong_pin, "not the root this device was installed with"),
    ("root substituted by the server", _root_substituted, "not the root this device was installed with"),
    ("cert signed by another root", _cert_from_other_root, "not signed by this device's root"),
    ("expired cert", _expired_cert, "expired at"),
    ("cert not yet valid", _not_yet_valid_cert, "is not valid before"),
    ("revoked cert", _revoked_cert, "has been revoked"),
    ("revoker cert used as approver", _revoker_as_approver, "revoker credential"),
    ("technician cert used as approver", _technician_as_approver, "cannot sign a grant"),
    ("automation not allowed by default", _automation_by_default, "cannot sign a grant"),
    ("approver cert used as revoker", _approver_as_revoker, "cannot sign revocation lists"),
    ("one approver where groups need two", _one_of_two_for_groups, "needs 2 distinct approvers, has 1"),
    ("one approver where scripts need two", _one_of_two_for_scripts, "needs 2 distinct approvers, has 1"),
    ("the same approver twice", _same_approver_twice, "the same person signed more than once"),
    ("one holder, two credentials", _same_holder_two_credentials, "needs 2 distinct approvers, has 1"),
    ("grant's technician approves it (by name)", _own_technician_by_name, "is named as a user"),
    ("grant's technician approves it (by credential)", _own_technician_by_credential, "is named as a user"),
    ("named technician's cert withheld", _unknown_technician_credential, "whose holder is unknown"),
    ("tampered body", _tampered_body, "does not verify"),
    ("non-canonical body", _non_canonical_body, "not in canonical form"),
    ("signature of another kind", _signature_of_other_kind, "does not verify over this grant"),
    ("passkey signature of another kind", _passkey_signature_of_other_kind, "challenge is not this grant"),
    ("signature by another key", _signature_by_other_key, "does not verify"),
    ("grant longer than the policy cap", _grant_over_cap, "at most 30 days"),
    ("expired grant", _expired_grant, "grant grant-0001 expired at"),
    ("revoked document", _revoked_document, "grant grant-0001 has been revoked"),
    ("stale revocation list", _stale_revocations, "revocation list is stale (expired at 2025-06-14"),
    ("no revocation list", _missing_revocations, "no revocation list"),
    ("revocation list valid too long", _revocations_too_long, "longer than this device allows (24 h)"),
    ("revocation list rolled back", _revocations_rolled_back, "older than list 5"),
    ("forged revocation list", _forged_revocations, "revocation list refused"),
    ("approver outside the approver set", _outside_approver_set, "not in the current approver set"),
    ("approver-set change by one approver", _approver_set_needs_two, "needs 2 distinct approvers"),
    ("grant relabelled as task", _wrong_kind_field, "task document is invalid"),
    ("passkey: UP flag clear", _passkey(flags=UV), "user-present flag (UP)"),
    ("passkey: UV flag clear", _passkey(flags=UP), "user-verified flag (UV)"),
    ("passkey: wrong rpId", _passkey(rp_id="evil.example"), "another relying party"),
    ("passkey: wrong type", _passkey(type="webauthn.create"), "not 'webauthn.get'"),
    ("passkey: wrong challenge", _passkey(challenge=b"x" * 32), "challenge is not this grant"),
    ("passkey: wrong origin", _passkey(origin="https://evil.example"), "origin 'https://evil.example'"),
    ("passkey: cross-origin", _passkey(cross_origin=True), "cross-origin"),
    ("passkey: signed by another key", _passkey_other_signer, "signature does not verify"),
]


@pytest.mark.parametrize(("check", "reason"), [(c, r) for _, c, r in REFUSALS], ids=[n for n, _, _ in REFUSALS])
def test_refusals(world: World, check: Case, reason: str) -> None:
    """Each broken document is refused, with the reason naming what was wrong."""
    verdict = check(world)
    assert not verdict.allowed
    assert reason in verdict.reason, verdict.reason


def test_passkey_challenge_keyword_overrides(world: World) -> None:
    """The test's 'wrong challenge' case really changes the challenge (guards the table above)."""
    document = new_document("grant", grant_body(world))
    soft = world.passkeys["carol"]
    good = soft.assertion(webauthn_challenge("grant", document.body.encode()))
    assert world.check(replace_approvals(document, [Approval(credential_id=world.ids["carol"], signature=good)])).allowed


def test_uv_not_required_when_policy_says_so(world: World) -> None:
    """A UP-only assertion passes when the device's policy does not ask for user verification."""
    world.policy = AuthorityPolicy(require_user_verification=False)
    assert _passkey(flags=UP)(world).allowed


def test_automation_allowed_where_policy_says(world: World) -> None:
    """An automation key may sign releases when the policy lists them, and still nothing else."""
    world.policy = AuthorityPolicy(automation_kinds=frozenset({"release"}))
    manifest = decode_body("release", '{"artifacts":[{"name":"helpline.whl","sha256":"' + "cd" * 32
                           + '","size":10}],"not_after":1750086400.0,"notes":"","released_at":1750000000.0,'
                           '"version":"1.2.3"}')
    assert world.check(signed(world, "release", manifest, "bot")).allowed
    assert not world.check(signed(world, "grant", grant_body(world), "bot")).allowed


def test_stale_list_still_revokes_and_other_kinds_may_proceed(world: World) -> None:
    """A stale list fails grants closed; where the policy allows stale lists, its revocations still apply."""
    world.revoke(credentials=(world.ids["bob"],), issued_at=NOW - 2 * DAY, expires_at=NOW - DAY)
    world.policy = AuthorityPolicy(fresh_revocations_for=frozenset({"grant"}))
    manifest = decode_body("release", canonical_bytes(decode_body(
        "release", '{"artifacts":[{"name":"a","sha256":"' + "cd" * 32
        + '","size":1}],"not_after":1750086400.0,"notes":"","released_at":1.0,"version":"1"}')).decode())
    assert world.check(signed(world, "release", manifest, "alice")).allowed
    assert "has been revoked" in world.check(signed(world, "release", manifest, "bob")).reason


def test_revocation_list_status(world: World) -> None:
    """A fresh list from a revoker verifies; its entries are exposed for the agent."""
    world.revoke(credentials=(world.ids["bob"],), documents=("grant-9",), sequence=3)
    status = verify_revocation_list(world.revocations, root=world.root, certs=world.certs, now=NOW,
                                    policy=world.policy)
    assert status.problem is None
    assert status.credentials == {world.ids["bob"]} and status.documents == {"grant-9"}


@settings(max_examples=60, deadline=None)
@given(garbage=st.binary(max_size=300), which=st.sampled_from(["authenticator_data", "client_data_json",
                                                                "signature"]))
def test_passkey_garbage_is_refused_not_raised(garbage: bytes, which: str) -> None:
    """Random bytes in any assertion field give a refusal, never an exception."""
    w = _GARBAGE_WORLD
    document = new_document("grant", grant_body(w))
    good = w.sign("carol", "grant", document.body)
    assert isinstance(good.signature, WebAuthnAssertion)
    broken = msgspec.structs.replace(good.signature, **{which: b64encode(garbage or b"\0")})
    verdict = w.check(replace_approvals(document, [Approval(credential_id=w.ids["carol"], signature=broken)]))
    assert not verdict.allowed


@settings(max_examples=60, deadline=None)
@given(body=st.text(max_size=200))
def test_body_garbage_is_refused_not_raised(body: str) -> None:
    """Any text as a document body is refused with a reason."""
    w = _GARBAGE_WORLD
    verdict = w.check(SignedDocument(kind="grant", body=body, approvals=[w.sign("alice", "grant", body)]))
    assert not verdict.allowed and verdict.reason


_GARBAGE_WORLD = make_world()


# --- technician proof -------------------------------------------------------------------------------

NONCE = "n" * 8 + "0123456789abcdef"


def proof(w: World, label: str = "dave", *, nonce: str = NONCE, device_id: str = "dev-1", action: Any = "control",
          document_id: str = "grant-0001", signed_at: float = NOW - 5, **assertion: Any) -> TechnicianProof:
    statement = TechnicianStatement(nonce=nonce, device_id=device_id, action=action, document_id=document_id,
                                    signed_at=signed_at)
    if label in w.passkeys:
        body = canonical_bytes(statement).decode()
        return TechnicianProof(body=body, approval=w.sign(label, "technician_proof", body, **assertion))
    return ceremony.sign_technician_statement(w.keys[label], w.ids[label], statement)


def verify(w: World, the_proof: TechnicianProof, grant: Any = None, **overrides: Any) -> Verdict:
    args: dict[str, Any] = dict(nonce=NONCE, device_id="dev-1", action="control", now=NOW,
                                pinned_root_fingerprint=w.root.fingerprint, root=w.root, certs=w.certs,
                                revocations=w.revocations, policy=w.policy)
    args.update(overrides)
    return verify_technician(the_proof, grant or grant_body(w), **args)


def test_technician_proofs_are_allowed(world: World) -> None:
    """Dave (Ed25519, named by credential) and Erin (passkey, named by holder) prove themselves."""
    dave = verify(world, proof(world))
    assert dave.allowed and dave.holders == ("Dave",), dave.reason
    erin = verify(world, proof(world, "erin"))
    assert erin.allowed and erin.counter == world.passkeys["erin"].counter, erin.reason


TechCase = Callable[[World], Verdict]


def after_revoking(w: World, **revocation: Any) -> Verdict:
    """Dave's good proof, checked after a new revocation list arrived."""
    w.revoke(**revocation)
    return verify(w, proof(w))


TECHNICIAN_REFUSALS: list[tuple[str, TechCase, str]] = [
    ("other (stale) nonce", lambda w: verify(w, proof(w, nonce="o" * 24)), "another nonce"),
    ("other device", lambda w: verify(w, proof(w, device_id="dev-2")), "another device"),
    ("other action", lambda w: verify(w, proof(w, action="view")), "is for 'view', not 'control'"),
    ("other document", lambda w: verify(w, proof(w, document_id="grant-0002")), "not grant grant-0001"),
    ("action the grant lacks", lambda w: verify(w, proof(w, action="tasks"), action="tasks"), "does not allow 'tasks'"),
    ("statement too old", lambda w: verify(w, proof(w, signed_at=NOW - 600)), "technician proof is stale"),
    ("statement from the future", lambda w: verify(w, proof(w, signed_at=NOW + 600)), "signed in the future"),
    ("technician not named", lambda w: verify(w, proof(w), grant_body(w, technicians=[], technician_names=["Zed"])),
     "is not named in grant"),
    ("approver cert as technician", lambda w: verify(w, proof(w, "alice"), grant_body(w, technician_names=["Alice"])),
     "cannot sign technician proofs"),
    ("revoked technician", lambda w: after_revoking(w, credentials=(w.ids["dave"],)), "has been revoked"),
    ("revoked grant", lambda w: after_revoking(w, documents=("grant-0001",)), "has been revoked"),
    ("stale revocation list", lambda w: after_revoking(w, issued_at=NOW - 2 * DAY, expires_at=NOW - DAY),
     "revocation list is stale"),
    ("wrong pinned root", lambda w: verify(w, proof(w), pinned_root_fingerprint="11" * 32), "installed with"),
    ("Ed25519 proof by another key", lambda w: verify(w, ceremony.sign_technician_statement(
        ceremony.generate_key(), w.ids["dave"], TechnicianStatement(nonce=NONCE, device_id="dev-1", action="control",
                                                                    document_id="grant-0001", signed_at=NOW))),
     "does not verify"),
    ("passkey: UP clear", lambda w: verify(w, proof(w, "erin", flags=UV)), "user-present flag"),
    ("passkey: wrong origin", lambda w: verify(w, proof(w, "erin", origin="https://evil.example")), "origin"),
    ("passkey: counter did not grow", lambda w: verify(w, proof(w, "erin", counter=7), counters={w.ids["erin"]: 7}),
     "counter did not grow"),
]


@pytest.mark.parametrize(("check", "reason"), [(c, r) for _, c, r in TECHNICIAN_REFUSALS],
                         ids=[n for n, _, _ in TECHNICIAN_REFUSALS])
def test_technician_refusals(world: World, check: TechCase, reason: str) -> None:
    """Each broken technician proof is refused, naming what was wrong."""
    verdict = check(world)
    assert not verdict.allowed
    assert reason in verdict.reason, verdict.reason


def test_technician_proof_cannot_be_replayed_as_approval(world: World) -> None:
    """Dave's signed statement bytes, presented as an approval of a grant, do not verify (domain separation)."""
    world.certify("dave_approver", "approver", "Dave")
    world.keys["dave_approver"] = world.keys["dave"]  # same key certified twice, as two kinds
    the_proof = proof(world)
    assert isinstance(the_proof.approval.signature, Ed25519Signature)
    document = SignedDocument(kind="grant", body=the_proof.body, approvals=[the_proof.approval])
    assert not world.check(document).allowed
    message = ed25519_message("technician_proof", the_proof.body.encode())
    assert message != ed25519_message("grant", the_proof.body.encode())


def test_task_technician_proof(world: World) -> None:
    """A task that names technicians accepts their proof for the 'tasks' action only."""
    task = task_body(technicians=[world.ids["dave"]])
    ok = verify(world, proof(world, action="tasks", document_id="task-0001"), task, action="tasks")
    assert ok.allowed, ok.reason
    assert not verify(world, proof(world, action="view", document_id="task-0001"), task, action="view").allowed


# --- rotation -------------------------------------------------------------------------------------


def test_root_rotation(world: World) -> None:
    """The pinned root's hand-over moves the pin; one signed by any other key does not."""
    new_key = ceremony.generate_key()
    new_root = ceremony.new_root(new_key, name="Example Org 2", now=NOW)
    rotation = ceremony.rotate_root(world.root_key, world.root, new_root, now=NOW)
    verdict = verify_rotation(rotation, pinned_root_fingerprint=world.root.fingerprint, root=world.root, now=NOW,
                              policy=world.policy)
    assert verdict.allowed and verdict.new_root == new_root
    forged = msgspec.structs.replace(rotation, signature=b64encode(new_key.sign(
        ed25519_message("root_rotation", rotation.body.encode()))))
    refused = verify_rotation(forged, pinned_root_fingerprint=world.root.fingerprint, root=world.root, now=NOW,
                              policy=world.policy)
    assert not refused.allowed and "not signed by the pinned root" in refused.reason
    other = make_world()
    elsewhere = verify_rotation(rotation, pinned_root_fingerprint=other.root.fingerprint, root=world.root, now=NOW,
                                policy=world.policy)
    assert not elsewhere.allowed


def test_cert_from_old_root_is_refused_after_rotation(world: World) -> None:
    """After rotation, certificates must be re-issued by the new root."""
    new_key = ceremony.generate_key()
    new_root = ceremony.new_root(new_key, name="Example Org 2", now=NOW)
    document = signed(world, "grant", grant_body(world), "alice")
    verdict = world.check(document, root=new_root, pinned_root_fingerprint=new_root.fingerprint)
    assert not verdict.allowed and "revocation list refused" in verdict.reason


# --- schedules, fixes, structs ----------------------------------------------------------------------


def test_occurrences_run_once_and_only_when_due() -> None:
    """A real, due occurrence runs once; the ledger refuses the replay; made-up or future times are refused."""
    task = task_body(schedule="0 3 * * *", not_before=NOW - 10 * DAY, not_after=NOW + 10 * DAY)
    due = datetime.fromtimestamp(NOW, UTC).replace(hour=3, minute=0, second=0, microsecond=0).timestamp()
    now = due + 60
    ok = check_occurrence(task, scheduled_at=due, now=now, tz=UTC, ledger=set())
    assert ok.allowed, ok.reason
    ledger = {occurrence_key(task.task_id, due)}
    assert "already run" in check_occurrence(task, scheduled_at=due, now=now, tz=UTC, ledger=ledger).reason
    assert "not an occurrence" in check_occurrence(task, scheduled_at=due + 60, now=now + 60, tz=UTC,
                                                   ledger=set()).reason
    assert "has not come" in check_occurrence(task, scheduled_at=due + DAY, now=now, tz=UTC, ledger=set()).reason
    assert "too old" in check_occurrence(task, scheduled_at=due - DAY, now=now, tz=UTC, ledger=set()).reason
    once = task_body()
    assert check_occurrence(once, scheduled_at=None, now=NOW, tz=UTC, ledger=set()).allowed
    assert not check_occurrence(once, scheduled_at=None, now=NOW, tz=UTC,
                                ledger={occurrence_key("task-0001", None)}).allowed


def test_fix_params_and_budget() -> None:
    """Self-service fixes: parameters within signed limits, and a run budget over a sliding period."""
    fix = SelfServiceFix(fix_id="fix-1", title="Clear print queue", action="restart_service",
                         params={"service": ParamLimit(type="str", choices=["cups"], required=True),
                                 "delay": ParamLimit(type="int", minimum=0, maximum=60)},
                         budget=RunBudget(max_runs=2, per_seconds=3600), devices=["dev-1"], not_before=NOW - 60,
                         not_after=NOW + DAY, issuer="Alice", issued_at=NOW - 60)
    assert check_fix_params(fix, {"service": "cups", "delay": 5}).allowed
    assert "required" in check_fix_params(fix, {}).reason
    assert "choices" in check_fix_params(fix, {"service": "sshd"}).reason
    assert "at most 60" in check_fix_params(fix, {"service": "cups", "delay": 61}).reason
    assert "type int" in check_fix_params(fix, {"service": "cups", "delay": True}).reason
    assert "unknown parameters" in check_fix_params(fix, {"service": "cups", "rm": "-rf"}).reason
    assert check_run_budget(fix, [NOW - 4000, NOW - 100], NOW).allowed
    assert "budget used up" in check_run_budget(fix, [NOW - 200, NOW - 100], NOW).reason


@pytest.mark.parametrize("build", [
    lambda: grant_body(_GARBAGE_WORLD, not_after=float("nan")),
    lambda: grant_body(_GARBAGE_WORLD, not_after=NOW - 7200),
    lambda: grant_body(_GARBAGE_WORLD, devices=[], groups=[]),
    lambda: task_body(action="script", script_sha256=None),
    lambda: task_body(schedule="0 3 * *"),
    lambda: RevocationList(sequence=1, issued_at=NOW, expires_at=float("inf")),
], ids=["nan", "ends before it starts", "no target", "script without hash", "four-field cron", "inf"])
def test_structs_validate_when_built(build: Callable[[], object]) -> None:
    """Invalid documents cannot even be constructed (NaN/inf included)."""
    with pytest.raises((ValueError, msgspec.ValidationError)):
        build()


def test_non_finite_numbers_are_refused_on_decode() -> None:
    """1e400 (inf after parsing) in a signed body is a validation error, not a grant valid forever."""
    body = canonical_bytes(task_body()).decode().replace('"not_after":1750086400.0', '"not_after":1e400')
    assert "1e400" in body
    with pytest.raises(msgspec.ValidationError):
        decode_body("task", body)


def test_cert_naming_another_root_is_refused(world: World) -> None:
    """A certificate must name the root that signed it (a re-used key cannot carry old certificates over)."""
    cert = CredentialCert(credential_id="other-root-1", kind="approver", holder="Alice",
                          public_key=Ed25519Key(raw=b64encode(ceremony.raw_public(world.keys["alice"]))),
                          root_fingerprint="00" * 32, not_before=NOW - DAY, not_after=NOW + DAY, issued_at=NOW - DAY)
    world.certs.append(ceremony.sign_cert(world.root_key, cert))
    world.ids["alice"] = "other-root-1"
    verdict = world.check(signed(world, "grant", grant_body(world), "alice"))
    assert not verdict.allowed and "names another root" in verdict.reason


def test_rotation_from_another_root_is_refused(world: World) -> None:
    """A hand-over the pinned key signed for some other root's chain does not move this pin."""
    new_root = ceremony.new_root(ceremony.generate_key(), name="Example Org 2", now=NOW)
    body = canonical_bytes(RootRotationBody(previous_fingerprint="22" * 32, new_root=new_root, issued_at=NOW))
    rotation = RootRotation(body=body.decode(), signature=b64encode(world.root_key.sign(
        ed25519_message("root_rotation", body))))
    verdict = verify_rotation(rotation, pinned_root_fingerprint=world.root.fingerprint, root=world.root, now=NOW,
                              policy=world.policy)
    assert not verdict.allowed and "from another root" in verdict.reason


def test_nan_clock_is_refused(world: World) -> None:
    """A NaN 'now' compares false with every bound; it must refuse, not slip past expiry checks."""
    document = signed(world, "grant", grant_body(world), "alice")
    assert not world.check(document, now=float("nan")).allowed
    status = verify_revocation_list(world.revocations, root=world.root, certs=world.certs, now=float("nan"),
                                    policy=world.policy)
    assert status.problem is not None
    assert not verify(world, proof(world), now=float("nan")).allowed


def test_non_ascii_pin_is_refused_not_raised(world: World) -> None:
    """A mistyped pin (non-ASCII) refuses instead of raising from compare_digest."""
    verdict = world.check(signed(world, "grant", grant_body(world), "alice"), pinned_root_fingerprint="é" * 64)
    assert not verdict.allowed and "installed with" in verdict.reason


def test_a_good_signature_is_checked_once_and_anything_else_afresh() -> None:
    """The device re-walks a held grant's chain every second: a signature found good is remembered (the same key,
    signature and message give the same answer), while a changed message, another key or a bad signature is
    verified again every time."""
    from certs.authority import _ed25519_ok
    from protocol.authority import b64encode

    private = Ed25519PrivateKey.generate()
    calls: list[bytes] = []

    class Counting:
        def __init__(self, key: Ed25519PrivateKey) -> None:
            self.public = key.public_key()

        def public_bytes_raw(self) -> bytes:
            return self.public.public_bytes_raw()

        def verify(self, signature: bytes, message: bytes) -> None:
            calls.append(message)
            self.public.verify(signature, message)

    message = b"grant body " + secrets.token_bytes(16)
    signature = b64encode(private.sign(message))
    key: Any = Counting(private)
    assert _ed25519_ok(key, signature, message)
    assert _ed25519_ok(key, signature, message)
    assert len(calls) == 1
    for _ in range(2):
        assert not _ed25519_ok(key, signature, message + b"!")
    assert len(calls) == 3
    other: Any = Counting(Ed25519PrivateKey.generate())
    assert not _ed25519_ok(other, signature, message)
    forged = b64encode(bytes(64))
    assert not _ed25519_ok(key, forged, message) and not _ed25519_ok(key, forged, message)
    assert len(calls) == 6
