"""``/api/v1/passkeys``: register, list, hand out for certification, revoke; sign documents and statements.

Every route acts on the caller's own passkeys (``AUTHENTICATED``); administrators may also read
anyone's public key (for the certification ceremony) and revoke anyone's passkey. Another
user's passkey answers 404, like a missing one.

Signing: the console computes the challenge itself (SHA-256 of the kind's domain prefix and the
exact body it shows), asks the authenticator, and sends the assertion here; this area checks it
with python-fido2 against the stored key (so a mistake is reported now rather than by a device)
and re-packs it as the :class:`~protocol.authority.Approval` a device verifies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from protocol.authority import (
    Approval,
    CredentialId,
    DocumentId,
    Nonce,
    NotCanonical,
    PasskeyKey,
    SignedKind,
    TechnicianStatement,
    canonical_bytes,
    decode_body,
    decode_canonical,
    webauthn_challenge,
)
from protocol.grants import Action
from server import api, audit
from server.auth.rights import Principal
from server.errors import ApiError

from . import assertion, registration, repository
from .relying_party import RelyingParty
from .verify import check_use, state_for

PasskeyId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
SigningKind = Literal["grant", "task", "fix", "release", "approver_set", "technician_proof"]

#: A document body is at most 256 KiB (protocol.authority.SignedDocument); room for the assertion.
_ASSERTION_MAX_BODY = 320 * 1024


class RegistrationOptions(msgspec.Struct, kw_only=True):
    registration_id: Annotated[str, msgspec.Meta(description="Send back with the answer (single use, 5 minutes).")]
    options: Annotated[dict[str, Any], msgspec.Meta(
        description="PublicKeyCredentialCreationOptions as WebAuthn JSON (base64url), for "
                    "navigator.credentials.create.")]
    expires_at: float


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    registration_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    label: Label
    credential: Annotated[dict[str, Any], msgspec.Meta(
        description="The browser's answer as WebAuthn JSON (RegistrationResponseJSON, base64url).")]


class PasskeyView(msgspec.Struct, kw_only=True):
    id: Annotated[str, msgspec.Meta(description="Also the credential id to certify it under "
                                                "(`helpline trust certify --id`).")]
    label: str
    webauthn_id: Annotated[str, msgspec.Meta(description="The WebAuthn credential id (base64url).")]
    fingerprint: Annotated[str, msgspec.Meta(description="SHA-256 hex of the COSE public key: what the holder reads "
                                                         "to the administrator.")]
    rp_id: str
    origins: list[str]
    sign_count: int
    created_at: float
    last_used: float | None
    revoked_at: float | None


class PasskeyList(msgspec.Struct):
    items: list[PasskeyView]


class StatementBody(msgspec.Struct, forbid_unknown_fields=True):
    """What the technician is about to prove (the agent's challenge, as the session shows it)."""

    nonce: Nonce
    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    action: Action
    document_id: DocumentId


class StatementToSign(msgspec.Struct):
    body: Annotated[str, msgspec.Meta(description="The canonical TechnicianStatement to sign, signed_at = now.")]


class AssertionBody(msgspec.Struct, forbid_unknown_fields=True):
    kind: SigningKind
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=256 * 1024,
                                      description="The exact canonical text the challenge was computed over.")]
    credential: Annotated[dict[str, Any], msgspec.Meta(
        description="The browser's assertion as WebAuthn JSON (AuthenticationResponseJSON, base64url).")]
    credential_id: Annotated[CredentialId | None, msgspec.Meta(
        description="The certificate's credential id, when it was certified under another id than the passkey's.")
    ] = None


class SignedApproval(msgspec.Struct):
    approval: Approval


def view(passkey: repository.Passkey) -> PasskeyView:
    return PasskeyView(id=passkey.id, label=passkey.label, webauthn_id=passkey.webauthn_id,
                       fingerprint=passkey.fingerprint, rp_id=passkey.rp_id, origins=list(passkey.origins),
                       sign_count=passkey.sign_count, created_at=passkey.created_at, last_used=passkey.last_used,
                       revoked_at=passkey.revoked_at)


def _label(text: str) -> str:
    label = " ".join(text.split())
    if not label or not label.isprintable():
        raise ApiError.invalid("label: printable text, please")
    return label


async def _visible(request: web.Request, caller: Principal) -> repository.Passkey:
    """The passkey in the path if it is the caller's (or the caller administers everything); else 404."""
    passkey = await repository.get(api.db(request), request.match_info["passkey_id"])
    if passkey is None or (passkey.user_id != caller.user_id and not caller.is_admin):
        raise ApiError.not_found("passkey")
    return passkey


def routes(relying_party: Callable[[], RelyingParty]) -> list[api.Route]:
    """The passkey routes; ``relying_party`` gives the console's (its port is known once it listens)."""

    async def register_begin(request: web.Request) -> web.StreamResponse:
        """Start registering a passkey"""
        caller = api.principal(request)
        begun = await registration.begin(api.db(request), relying_party(), user_id=caller.user_id,
                                         username=caller.username)
        return api.json(RegistrationOptions(**begun))

    async def register_finish(request: web.Request) -> web.StreamResponse:
        """Finish registering a passkey"""
        caller = api.principal(request)
        body = api.body(request, RegisterBody)
        passkey = await registration.finish(api.db(request), relying_party(), user_id=caller.user_id,
                                            username=caller.username, ticket=body.registration_id,
                                            label=_label(body.label), response=body.credential)
        return api.json(view(passkey), status=201)

    async def list_mine(request: web.Request) -> web.StreamResponse:
        """My passkeys"""
        caller = api.principal(request)
        return api.json(PasskeyList([view(p) for p in await repository.list_for(api.db(request), caller.user_id)]))

    async def public_key(request: web.Request) -> web.StreamResponse:
        """A passkey's public key, for certification"""
        passkey = await _visible(request, api.principal(request))
        return api.json(passkey.public_key())

    async def revoke(request: web.Request) -> web.StreamResponse:
        """Revoke a passkey"""
        caller = api.principal(request)
        passkey = await _visible(request, caller)
        db = api.db(request)
        async with db.transaction() as tx:
            done = await repository.revoke(tx, passkey.id, time.time())
            if done:
                await audit.append_in(tx, caller.username, "passkey.revoked", passkey.id,
                                      {"user_id": passkey.user_id, "label": passkey.label,
                                       "fingerprint": passkey.fingerprint})
        return api.json({"revoked": done})

    async def statement(request: web.Request) -> web.StreamResponse:
        """The canonical statement a technician signs"""
        body = api.body(request, StatementBody)
        text = canonical_bytes(TechnicianStatement(nonce=body.nonce, device_id=body.device_id, action=body.action,
                                                   document_id=body.document_id, signed_at=float(int(time.time()))))
        return api.json(StatementToSign(text.decode()))

    async def sign(request: web.Request) -> web.StreamResponse:
        """Turn a passkey assertion into an approval"""
        caller = api.principal(request)
        body = api.body(request, AssertionBody)
        kind: SignedKind = body.kind
        _check_body(kind, body.body)
        try:
            parsed = assertion.parse(body.credential)
        except assertion.BadAssertion as exc:
            raise ApiError.invalid(str(exc)) from exc
        db = api.db(request)
        passkey = await repository.by_webauthn_id(db, parsed.webauthn_id)
        if passkey is None or passkey.user_id != caller.user_id or passkey.revoked_at is not None:
            raise ApiError.not_found("passkey of yours with this credential id")
        if not assertion.challenge_matches(kind, body.body, parsed):
            raise ApiError(400, "wrong_challenge", f"the assertion's challenge is not this {kind}")
        problem = await check_use(db, passkey, parsed, state_for(webauthn_challenge(kind, body.body.encode()),
                                                                 require_user_verification=True),
                                  actor=caller.username, purpose=kind)
        if problem:
            raise ApiError(400, problem, "the passkey's assertion was refused" if problem == "bad_passkey" else
                           "the passkey's signature counter did not grow (a cloned authenticator?); refused")
        approval = assertion.approval(kind, body.body, body.credential_id or passkey.id, body.credential)
        return api.json(SignedApproval(approval))

    own = {404: "No such passkey of yours"}
    return [
        api.Route("POST", "/api/v1/passkeys/register/begin", register_begin, api.AUTHENTICATED,
                  response=RegistrationOptions, errors={409: "Too many passkeys"},
                  description="Creation options for navigator.credentials.create (rp id = the console's host; "
                              "ES256 or EdDSA; user verification preferred; my other passkeys excluded)."),
        api.Route("POST", "/api/v1/passkeys/register/finish", register_finish, api.AUTHENTICATED, body=RegisterBody,
                  response=PasskeyView, status=201,
                  errors={409: "Registration expired or already finished, or passkey already registered"},
                  description="python-fido2 checks the answer; the public key is kept with its fingerprint. "
                              "Audited."),
        api.Route("GET", "/api/v1/passkeys", list_mine, api.AUTHENTICATED, response=PasskeyList,
                  description="My passkeys (revoked ones too), each with the fingerprint to read at the "
                              "certification ceremony."),
        api.Route("GET", "/api/v1/passkeys/{passkey_id}/public-key", public_key, api.AUTHENTICATED,
                  response=PasskeyKey, errors=own,
                  description="The PasskeyKey JSON `helpline trust certify --cose-key FILE` takes. Mine, or "
                              "anyone's for administrators."),
        api.Route("DELETE", "/api/v1/passkeys/{passkey_id}", revoke, api.AUTHENTICATED, response="Revoked",
                  errors=own,
                  description="It can no longer log in or sign here. Its certificate stays valid on devices "
                              "until it is on a revocation list (`helpline trust revoke --credential ID`). Audited."),
        api.Route("POST", "/api/v1/passkeys/statements", statement, api.AUTHENTICATED, body=StatementBody,
                  response=StatementToSign,
                  description="The canonical TechnicianStatement answering an agent's challenge (signed_at = the "
                              "server's clock); the console checks its fields before signing it."),
        api.Route("POST", "/api/v1/passkeys/assertions", sign, api.AUTHENTICATED, body=AssertionBody,
                  response=SignedApproval, max_body=_ASSERTION_MAX_BODY, errors=own,
                  description="Checks the assertion over the body (challenge, origin, flags incl. user "
                              "verification, signature, counter) and answers the Approval a device verifies."),
    ]


def _check_body(kind: SignedKind, text: str) -> None:
    """Only a body a device could accept is worth signing."""
    try:
        if kind == "technician_proof":
            decode_canonical(text, TechnicianStatement)
        else:
            decode_body(kind, text)
    except (msgspec.ValidationError, msgspec.DecodeError, NotCanonical) as exc:
        raise ApiError(400, "invalid_body", f"not a canonical {kind}: {str(exc)[:200]}") from exc
