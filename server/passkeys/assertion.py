"""The browser's WebAuthn assertion as protocol.authority's :class:`Approval` / :class:`TechnicianProof` (pure).

A browser hands back an assertion as WebAuthn JSON (``AuthenticationResponseJSON``: base64url
``rawId``, ``response.authenticatorData`` / ``clientDataJSON`` / ``signature``). python-fido2
parses it; this module re-packs the three signed parts unchanged, in standard base64, into a
:class:`~protocol.authority.WebAuthnAssertion` under the credential id the root certified.
Nothing is verified here beyond the shape and the challenge — the device verifies the chain
(:func:`certs.authority.verify_chain`, :func:`certs.authority.verify_technician`).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from fido2.utils import websafe_encode
from fido2.webauthn import AuthenticationResponse

from protocol.authority import (
    Approval,
    NotCanonical,
    SignedKind,
    TechnicianProof,
    TechnicianStatement,
    WebAuthnAssertion,
    b64encode,
    decode_canonical,
    webauthn_challenge,
)

T = TypeVar("T")


class BadAssertion(ValueError):
    """The browser's answer is not a usable assertion; the message says why (safe to show)."""


@dataclass(frozen=True)
class BrowserAssertion:
    """An assertion as python-fido2 parsed it, and its three signed parts re-packed."""

    #: The WebAuthn credential id (base64url), to find the passkey.
    webauthn_id: str
    assertion: WebAuthnAssertion
    #: What the browser put in clientDataJSON: must be :func:`~protocol.authority.webauthn_challenge`.
    challenge: bytes
    counter: int
    parsed: AuthenticationResponse


def _validated(value: T, kind: type[T]) -> T:
    """Re-decode through msgspec so the field constraints (patterns, lengths) apply to what we built."""
    try:
        return msgspec.json.decode(msgspec.json.encode(value), type=kind)
    except msgspec.ValidationError as exc:
        raise BadAssertion(f"the assertion does not fit an approval: {exc}") from exc


def parse(response: Mapping[str, Any]) -> BrowserAssertion:
    """python-fido2's reading of a browser's ``AuthenticationResponseJSON``; raises :class:`BadAssertion`."""
    try:
        parsed = AuthenticationResponse.from_dict(response)
        inner = parsed.response
        challenge = inner.client_data.challenge
        counter = int(inner.authenticator_data.counter)
        assertion = WebAuthnAssertion(authenticator_data=b64encode(bytes(inner.authenticator_data)),
                                      client_data_json=b64encode(bytes(inner.client_data)),
                                      signature=b64encode(bytes(inner.signature)))
    except Exception as exc:  # fido2's parsers raise assorted types on a peer's garbage
        raise BadAssertion("not a WebAuthn assertion (AuthenticationResponseJSON)") from exc
    if not isinstance(challenge, bytes):
        raise BadAssertion("the assertion's clientDataJSON has no challenge")
    return BrowserAssertion(websafe_encode(parsed.raw_id), _validated(assertion, WebAuthnAssertion), challenge,
                            counter, parsed)


def challenge_matches(kind: SignedKind, body: str, assertion: BrowserAssertion) -> bool:
    """Is the assertion's challenge the one that approves exactly ``body`` as a ``kind``?"""
    return hmac.compare_digest(assertion.challenge, webauthn_challenge(kind, body.encode()))


def approval(kind: SignedKind, body: str, credential_id: str, response: Mapping[str, Any]) -> Approval:
    """The :class:`Approval` of ``body`` by the certified credential ``credential_id``."""
    parsed = parse(response)
    if not challenge_matches(kind, body, parsed):
        raise BadAssertion(f"the assertion's challenge is not this {kind}")
    return _validated(Approval(credential_id=credential_id, signature=parsed.assertion), Approval)


def technician_proof(body: str, credential_id: str, response: Mapping[str, Any]) -> TechnicianProof:
    """A :class:`TechnicianProof`: the canonical statement ``body`` and the passkey's assertion over it."""
    try:
        decode_canonical(body, TechnicianStatement)
    except (msgspec.ValidationError, msgspec.DecodeError, NotCanonical) as exc:
        raise BadAssertion(f"not a canonical technician statement: {exc}") from exc
    return TechnicianProof(body=body, approval=approval("technician_proof", body, credential_id, response))
