"""A passkey as the login's second factor, instead of the TOTP code.

:class:`PasskeyFactor` is the :class:`server.accounts.login.SecondFactor` this feature plugs
into the login service. The password step asks it for an :meth:`~PasskeyFactor.offer` (request
options listing the user's passkeys, and a single-use ticket tied to that user); the passkey
step hands back the ticket and the browser's assertion to :meth:`~PasskeyFactor.answer`. The
login service keeps the rate limit, lockout, failure count and audit for both steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fido2.webauthn import UserVerificationRequirement

from server.accounts import users
from server.accounts.login import FactorAnswer
from server.store import Database

from . import repository
from .assertion import BadAssertion, parse
from .registration import descriptor
from .relying_party import RelyingParty, jsonable
from .verify import check_use


class PasskeyFactor:
    def __init__(self, db: Database, relying_party: Callable[[], RelyingParty]) -> None:
        self.db = db
        self.relying_party = relying_party

    async def offer(self, user_id: str) -> dict[str, Any] | None:
        active = await repository.list_for(self.db, user_id, active_only=True)
        rp = self.relying_party()
        usable = [p for p in active if p.rp_id == rp.rp_id]
        if not usable:
            return None
        options, state = rp.fido2().authenticate_begin([descriptor(p) for p in usable],
                                                       user_verification=UserVerificationRequirement.PREFERRED)
        ticket = await repository.put_ticket(self.db, user_id, "login", {"fido2": jsonable(state)})
        return {"ticket": ticket, "options": jsonable(options.public_key)}

    async def answer(self, ticket: str, response: Mapping[str, Any]) -> FactorAnswer:
        taken = await repository.take_ticket(self.db, ticket, "login")
        if taken is None:
            return FactorAnswer(None)
        user_id, state = taken
        try:
            assertion = parse(response)
        except BadAssertion:
            return FactorAnswer(user_id, "bad_passkey")
        passkey = await repository.by_webauthn_id(self.db, assertion.webauthn_id)
        if passkey is None or passkey.user_id != user_id or passkey.revoked_at is not None:
            return FactorAnswer(user_id, "unknown_passkey")
        row = await users.get_row(self.db, user_id=user_id)
        actor = row["username"] if row else user_id
        problem = await check_use(self.db, passkey, assertion, state["fido2"], actor=actor, purpose="login")
        return FactorAnswer(user_id, problem)
