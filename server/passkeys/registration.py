"""Registering a passkey from the console: python-fido2's ``register_begin`` / ``register_complete``.

The server keeps only what the authenticator proved at registration: the credential id and the
COSE public key (as python-fido2 parsed and re-encoded it — canonical CBOR, the same bytes the
fingerprint and the certificate are computed over). Attestation is not asked for: what makes a
passkey trusted is the administrator's ceremony (the holder reads the fingerprint their own
screen shows), not the authenticator's make.
"""

from __future__ import annotations

import time
from typing import Any

from fido2 import cbor
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import (
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialType,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from certs.errors import CertError
from server import audit
from server.errors import ApiError
from server.store import Database

from . import repository
from .relying_party import RelyingParty, jsonable

#: fido2's messages are short and fixed; the cap keeps a peer's text out of answers anyway.
_MAX_REASON = 200


def descriptor(passkey: repository.Passkey) -> PublicKeyCredentialDescriptor:
    return PublicKeyCredentialDescriptor(type=PublicKeyCredentialType.PUBLIC_KEY,
                                         id=websafe_decode(passkey.webauthn_id))


async def begin(db: Database, rp: RelyingParty, *, user_id: str, username: str) -> dict[str, Any]:
    """Creation options for ``navigator.credentials.create`` and the ticket that finishes it."""
    active = await repository.list_for(db, user_id, active_only=True)
    if len(active) >= repository.MAX_PER_USER:
        raise ApiError.conflict("too_many_passkeys", f"at most {repository.MAX_PER_USER} passkeys per user; "
                                "revoke one first")
    user = PublicKeyCredentialUserEntity(name=username, id=user_id.encode(), display_name=username)
    options, state = rp.fido2().register_begin(user, [descriptor(p) for p in active],
                                               resident_key_requirement=ResidentKeyRequirement.PREFERRED,
                                               user_verification=UserVerificationRequirement.PREFERRED)
    ticket = await repository.put_ticket(db, user_id, "register", {"fido2": jsonable(state),
                                                                   "origins": list(rp.origins)})
    return {"registration_id": ticket, "options": jsonable(options.public_key),
            "expires_at": time.time() + repository.TICKET_TTL_S["register"]}


async def finish(db: Database, rp: RelyingParty, *, user_id: str, username: str, ticket: str, label: str,
                 response: dict[str, Any]) -> repository.Passkey:
    """Check the authenticator's answer with python-fido2 and keep its public key."""
    taken = await repository.take_ticket(db, ticket, "register")
    if taken is None or taken[0] != user_id:
        raise ApiError(409, "registration_expired", "this registration expired or was already finished; start again")
    state = taken[1]
    try:
        auth_data = RelyingParty(rp.rp_id, tuple(state["origins"])).fido2().register_complete(state["fido2"], response)
    except Exception as exc:  # fido2 raises ValueError, KeyError, TypeError … on a peer's garbage
        raise ApiError(400, "invalid_passkey", f"the authenticator's answer was refused: {str(exc)[:_MAX_REASON]}"
                       ) from exc
    credential = auth_data.credential_data
    if credential is None:
        raise ApiError(400, "invalid_passkey", "the authenticator's answer carries no credential")
    cose_key = cbor.encode(credential.public_key)  # type: ignore[no-untyped-call]
    webauthn_id = websafe_encode(credential.credential_id)
    now = time.time()
    passkey = repository.Passkey(id=repository.new_id(), user_id=user_id, webauthn_id=webauthn_id, cose_key=cose_key,
                                 rp_id=rp.rp_id, origins=tuple(state["origins"]), sign_count=int(auth_data.counter),
                                 label=label, created_at=now, last_used=None, revoked_at=None)
    try:
        fingerprint = passkey.fingerprint  # builds the PasskeyKey: refuses algorithms a device would refuse
    except (CertError, ValueError) as exc:
        raise ApiError(400, "unsupported_passkey", f"this passkey cannot be certified: {exc}") from exc
    if await repository.by_webauthn_id(db, webauthn_id) is not None:
        raise ApiError.conflict("passkey_exists", "this passkey is already registered")
    async with db.transaction() as tx:
        await repository.insert(tx, passkey)
        await audit.append_in(tx, username, "passkey.registered", passkey.id,
                              {"label": label, "fingerprint": fingerprint, "rp_id": rp.rp_id})
    return passkey
