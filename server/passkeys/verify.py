"""One use of a registered passkey, checked by python-fido2, and its signature counter.

``authenticate_complete`` checks the type, origin, challenge, rpIdHash, user-present (and
user-verified when asked) flags and the signature against the stored COSE key. The counter
is then compared with the last one stored: an authenticator that keeps a counter must show a
larger one each time, so a counter that did not grow means a second copy of the key (a cloned
authenticator, or a replayed assertion) — refused and audited. Synced passkeys keep no counter
(always 0) and pass.
"""

from __future__ import annotations

import time
from typing import Any

from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import AttestedCredentialData, UserVerificationRequirement

from certs.authority import parse_cose_key
from server import audit
from server.store import Database

from . import repository
from .assertion import BrowserAssertion
from .relying_party import RelyingParty

#: An all-zero AAGUID: python-fido2 wants attested credential data, we only know the key.
_NO_AAGUID = bytes(16)


def credential_data(passkey: repository.Passkey) -> AttestedCredentialData:
    public = parse_cose_key(passkey.cose_key)
    if public is None:  # checked at registration; a row edited behind our back
        raise ValueError(f"passkey {passkey.id} has no usable COSE key")
    return AttestedCredentialData.create(_NO_AAGUID, websafe_decode(passkey.webauthn_id), public)


def state_for(challenge: bytes, *, require_user_verification: bool) -> dict[str, Any]:
    """python-fido2's authentication state for a challenge we chose ourselves (a document's)."""
    uv = UserVerificationRequirement.REQUIRED if require_user_verification else UserVerificationRequirement.PREFERRED
    return {"challenge": websafe_encode(challenge), "user_verification": uv.value}


async def check_use(db: Database, passkey: repository.Passkey, assertion: BrowserAssertion, state: dict[str, Any], *,
                    actor: str, purpose: str, now: float | None = None) -> str:
    """Empty when ``assertion`` is a fresh, valid use of ``passkey`` for ``state``; else a reason code."""
    now = time.time() if now is None else now
    server = RelyingParty(passkey.rp_id, passkey.origins).fido2()
    try:
        server.authenticate_complete(state, [credential_data(passkey)], assertion.parsed)
    except Exception:  # ValueError for every refusal; assorted types for a peer's garbage
        return "bad_passkey"
    counter = assertion.counter
    grew = (counter == 0 and passkey.sign_count == 0) or counter > passkey.sign_count
    if not grew or not await repository.record_use(db, passkey, counter, now):
        await audit.append(db, actor, "passkey.counter_regressed", passkey.id,
                           {"purpose": purpose, "counter": counter, "stored": passkey.sign_count,
                            "label": passkey.label})
        return "passkey_counter_regressed"
    return ""
