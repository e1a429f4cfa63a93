"""server/passkeys/assertion.py: a browser's AuthenticationResponseJSON re-packed as the Approval and
TechnicianProof a device verifies — byte for byte, and never raising anything but BadAssertion on garbage."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from fido2.utils import websafe_decode
from hypothesis import given, settings
from hypothesis import strategies as st

from certs import ceremony
from certs.authority import verify_technician
from protocol.authority import (
    Approval,
    AuthorityPolicy,
    SignedDocument,
    TechnicianStatement,
    UnattendedGrant,
    WebAuthnAssertion,
    canonical_bytes,
    new_document,
    webauthn_challenge,
)
from server.passkeys import assertion
from tests.test_passkeys_support import Org, SoftPasskey

ORIGIN = "https://helpline.example:8444"
NOW = time.time()


def passkey_org(soft: SoftPasskey, credential_id: str, kind: Any, holder: str) -> Org:
    org = Org.new(now=NOW)
    key = ceremony.passkey_key(soft.cose_bytes, rp_id=soft.rp_id, webauthn_id=ceremony.webauthn_id_of(soft.raw_id),
                               origins=[ORIGIN])
    org.certify(credential_id, kind, holder, key, now=NOW)
    return org


def grant(**changes: Any) -> UnattendedGrant:
    fields: dict[str, Any] = dict(grant_id="grant-7", groups=["lab"], technician_names=["Dave"], actions=["view"],
                                  not_before=NOW - 60, not_after=NOW + 3600, issuer="Carol", issued_at=NOW - 60)
    return UnattendedGrant(**{**fields, **changes})


def test_the_approval_carries_the_three_signed_parts_unchanged() -> None:
    """authenticatorData, clientDataJSON and signature are the browser's bytes, in standard base64."""
    soft = SoftPasskey(ORIGIN, rp_id="helpline.example")
    document = new_document("grant", grant())
    response = soft.get(webauthn_challenge("grant", document.body.encode()))
    approval = assertion.approval("grant", document.body, "carol-0001", response)
    parts = response["response"]
    signature = approval.signature
    assert approval.credential_id == "carol-0001" and isinstance(signature, WebAuthnAssertion)
    for ours, theirs in ((signature.authenticator_data, parts["authenticatorData"]),
                         (signature.client_data_json, parts["clientDataJSON"]),
                         (signature.signature, parts["signature"])):
        assert base64.b64decode(ours, validate=True) == websafe_decode(theirs)


def test_a_group_grant_approved_by_a_passkey_and_a_cli_key_is_accepted_by_the_device() -> None:
    """Four-eyes across both credential types: the converted passkey approval plus an Ed25519 one verify."""
    soft = SoftPasskey(ORIGIN, rp_id="helpline.example")
    org = passkey_org(soft, "carol-0001", "approver", "Carol")
    alice = org.cli_key("alice-0001", "approver", "Alice")
    document = new_document("grant", grant())
    passkey = assertion.approval("grant", document.body, "carol-0001",
                                 soft.get(webauthn_challenge("grant", document.body.encode())))
    cli = ceremony.approve(document, credential_id="alice-0001", key=alice)
    both = SignedDocument(kind="grant", body=document.body, approvals=[*cli.approvals, passkey])
    assert org.check(both, now=NOW).allowed, org.check(both, now=NOW).reason
    assert "needs 2 distinct approvers" in org.check(cli, now=NOW).reason


def test_an_assertion_for_one_document_does_not_approve_another() -> None:
    """The conversion refuses a challenge over another body; forced through anyway, the device refuses it."""
    soft = SoftPasskey(ORIGIN, rp_id="helpline.example")
    org = passkey_org(soft, "carol-0001", "approver", "Carol")
    first, second = new_document("grant", grant()), new_document("grant", grant(grant_id="grant-8"))
    response = soft.get(webauthn_challenge("grant", first.body.encode()))
    with pytest.raises(assertion.BadAssertion, match="challenge is not this grant"):
        assertion.approval("grant", second.body, "carol-0001", response)
    with pytest.raises(assertion.BadAssertion, match="challenge is not this task"):
        assertion.approval("task", first.body, "carol-0001", response)
    replayed = Approval(credential_id="carol-0001", signature=assertion.parse(response).assertion)
    forged = SignedDocument(kind="grant", body=second.body, approvals=[replayed])
    verdict = org.check(forged, now=NOW)
    assert not verdict.allowed and "challenge is not this grant" in verdict.reason


def test_a_technician_proof_verifies_on_the_device() -> None:
    """A statement answering the agent's nonce, signed through the browser, passes verify_technician."""
    soft = SoftPasskey(ORIGIN, rp_id="helpline.example")
    org = passkey_org(soft, "dave-0001", "technician", "Dave")
    body = grant(groups=[], devices=["dev-1"])
    statement = canonical_bytes(TechnicianStatement(nonce="N" * 22, device_id="dev-1", action="view",
                                                    document_id="grant-7", signed_at=float(int(NOW)))).decode()
    proof = assertion.technician_proof(statement, "dave-0001",
                                       soft.get(webauthn_challenge("technician_proof", statement.encode())))
    verdict = verify_technician(proof, body, nonce="N" * 22, device_id="dev-1", action="view", now=NOW,
                                pinned_root_fingerprint=org.root.fingerprint, root=org.root, certs=org.certs,
                                revocations=org.revocations, policy=AuthorityPolicy())
    assert verdict.allowed, verdict.reason
    with pytest.raises(assertion.BadAssertion, match="canonical technician statement"):
        assertion.technician_proof(statement.replace('"action"', ' "action"'), "dave-0001", {})


def _valid() -> dict[str, Any]:
    return SoftPasskey(ORIGIN).get(b"c" * 32)


@pytest.mark.parametrize("mangle", [
    lambda r: {},
    lambda r: {**r, "rawId": "AAAA"},  # id and rawId differ
    lambda r: {**r, "response": {**r["response"], "authenticatorData": "!!"}},
    lambda r: {**r, "response": {**r["response"], "clientDataJSON": "e30"}},  # {} has no challenge
    lambda r: {**r, "response": {**r["response"], "signature": None}},
    lambda r: {**r, "response": "nope"},
])
def test_malformed_browser_answers_raise_bad_assertion(mangle: Any) -> None:
    """Missing parts, bad base64, id ≠ rawId, client data without challenge: BadAssertion, nothing else."""
    with pytest.raises(assertion.BadAssertion):
        assertion.parse(mangle(_valid()))


def test_a_credential_id_that_no_certificate_could_have_is_refused() -> None:
    """The approval's credential id must fit protocol.authority.CredentialId."""
    response = SoftPasskey(ORIGIN).get(webauthn_challenge("grant", b"{}"))
    with pytest.raises(assertion.BadAssertion, match="does not fit"):
        assertion.approval("grant", "{}", "no spaces allowed", response)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=40),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
                     max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "rawId", "type", "response", "clientExtensionResults"]), _json)
       | st.dictionaries(st.text(max_size=10), _json))
def test_parse_never_raises_anything_else_on_arbitrary_json(value: dict[str, Any]) -> None:
    """A peer's arbitrary JSON is a BadAssertion or (never, here) a valid assertion — no other exception."""
    try:
        assertion.parse(value)
    except assertion.BadAssertion:
        pass
