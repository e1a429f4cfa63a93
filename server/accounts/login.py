"""Password + TOTP login with per-address rate limiting and per-user lockout, all audited.

Outcomes are a small closed set (:class:`LoginOutcome`). A user without a TOTP secret
(new, or after ``reset-totp``) gets a pending secret and its QR code once the password is
right, and completes the login by sending a code from it — TOTP is required for everyone.

A user with a registered passkey may answer with it instead of the TOTP code, in two steps:
the password (without a code) earns a single-use ticket and the WebAuthn request options
(``LoginOutcome.passkey``, from the :class:`SecondFactor` that :mod:`server.passkeys` plugs
in); :meth:`LoginService.login_with_passkey` takes the ticket and the browser's assertion.
The second step meets the same rate limit, lockout, failure count and audit as the first.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import audit
from ..audit_limits import AuditThrottle
from ..store import Database
from . import lockout, passwords, sessions, totp, users
from .lockout import LOCKOUT_S, MAX_FAILURES
from .ratelimit import SlidingWindow

__all__ = ["LOCKOUT_S", "MAX_FAILURES", "LoginOutcome", "LoginService"]


@dataclass(frozen=True)
class LoginOutcome:
    status: int
    code: str
    message: str
    session: sessions.NewSession | None = None
    user: users.User | None = None
    enrollment: dict[str, str] = field(default_factory=dict)
    retry_after: float = 0.0
    #: Password right, no code: the passkey step's ticket and WebAuthn request options (if the user has one).
    passkey: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.session is not None


@dataclass(frozen=True)
class FactorAnswer:
    """A second factor's verdict: whose ticket it was (None: unknown or expired) and why it failed (empty: ok)."""

    user_id: str | None
    problem: str = ""


class SecondFactor(Protocol):
    """A second factor besides TOTP, answered in a step of its own (passkeys)."""

    async def offer(self, user_id: str) -> dict[str, Any] | None:
        """A ticket and what the client must answer, or None when the user has no such factor."""

    async def answer(self, ticket: str, response: Mapping[str, Any]) -> FactorAnswer:
        """Check the answer to an offer; the ticket is used up whatever the outcome."""


class LoginService:
    def __init__(self, db: Database, *, per_address: int = 10, window_s: float = 60.0,
                 audit_throttle: AuditThrottle | None = None) -> None:
        self.db = db
        #: Bounds the ``auth.rate_limited`` records a flooding address adds (the rest aggregated).
        self.audit_throttle = audit_throttle or AuditThrottle()
        self.limiter = SlidingWindow(per_address, window_s)
        self.second_factor: SecondFactor | None = None

    async def login(self, username: str, password: str, code: str | None, *, peer: str = "",
                    user_agent: str = "") -> LoginOutcome:
        if not self.limiter.allow(peer):
            wait = self.limiter.retry_after(peer)
            await self.audit_throttle.append(self.db, f"peer:{peer}", "auth.rate_limited", username[:64], peer=peer)
            return LoginOutcome(429, "rate_limited", "too many login attempts; try again later", retry_after=wait)
        now = time.time()
        row = await users.get_row(self.db, username=username[:users.USERNAME_MAX])
        # Count the attempt before the slow hash (lockout.py): parallel guesses cannot all pass the check.
        if row is not None and not await lockout.reserve(self.db, row["id"], now):
            await audit.append(self.db, username[:64], "auth.login_refused", row["id"], {"reason": "locked",
                                                                                        "peer": peer})
            return LoginOutcome(423, "locked", "account locked after repeated failures; try again later",
                                retry_after=await lockout.retry_after(self.db, row["id"], now))
        good = await passwords.verify_password_async(password, row["password_hash"] if row else None)
        if row is None or not good or row["disabled"]:
            reason = "unknown_user" if row is None else "disabled" if good else "bad_password"
            return await self._failure(row, username, peer, reason, reserved=True)
        if row["totp_secret"] is None:
            return await self._enrollment(row, code, peer, user_agent)
        if not code:
            await lockout.refund(self.db, row["id"])  # the password was right: this step is no failure
            offer = await self.second_factor.offer(row["id"]) if self.second_factor is not None else None
            if offer:
                return LoginOutcome(401, "totp_required", "use your passkey, or enter the 6-digit code from your "
                                    "authenticator app", passkey=offer)
            return LoginOutcome(401, "totp_required", "enter the 6-digit code from your authenticator app")
        if not await self._accept_code(row["id"], row["totp_secret"], code, row["totp_last_step"]):
            return await self._failure(row, username, peer, "bad_totp", reserved=True)
        return await self._success(row, peer, user_agent)

    async def login_with_passkey(self, ticket: str, response: Mapping[str, Any], *, peer: str = "",
                                 user_agent: str = "") -> LoginOutcome:
        """The second step: the ticket the password earned and the passkey's assertion.

        Not rate-limited on its own: each ticket is a password step that was (and is single use).
        """
        if self.second_factor is None:
            return LoginOutcome(404, "not_found", "passkeys are not available on this server")
        answer = await self.second_factor.answer(ticket, response)
        row = await users.get_row(self.db, user_id=answer.user_id) if answer.user_id else None
        if row is None:
            return LoginOutcome(401, "passkey_expired", "the passkey step expired or was already used; log in again")
        now = time.time()
        if not await lockout.reserve(self.db, row["id"], now):  # counted before it is settled, as in login()
            await audit.append(self.db, row["username"], "auth.login_refused", row["id"], {"reason": "locked",
                                                                                          "peer": peer})
            return LoginOutcome(423, "locked", "account locked after repeated failures; try again later",
                                retry_after=await lockout.retry_after(self.db, row["id"], now))
        if row["disabled"] or answer.problem:
            return await self._failure(row, row["username"], peer, answer.problem or "disabled", reserved=True)
        return await self._success(row, peer, user_agent, factor="passkey")

    async def _accept_code(self, user_id: str, secret: str, code: str, last_step: int) -> bool:
        step = totp.matching_step(secret, code, time.time(), last_step)
        if step is None:
            return False
        # Compare-and-set: a concurrent login with the same code loses.
        return await self.db.execute("UPDATE users SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?",
                                     (step, user_id, step)) == 1

    async def _enrollment(self, row: dict[str, Any], code: str | None, peer: str, user_agent: str) -> LoginOutcome:
        pending = row["totp_pending"]
        if pending and code:
            step = totp.matching_step(pending, code, time.time(), 0)
            if step is None:
                return await self._failure(row, row["username"], peer, "bad_totp_enrollment", reserved=True)
            async with self.db.transaction() as tx:
                await users.set_totp_secret(tx, row["id"], pending)
                await tx.execute("UPDATE users SET totp_last_step = ? WHERE id = ?", (step, row["id"]))
                await audit.append_in(tx, row["username"], "user.totp_enrolled", row["id"], {"peer": peer})
            return await self._success(row, peer, user_agent)
        await lockout.refund(self.db, row["id"])  # the password was right: this step is no failure
        if not pending:
            pending = totp.new_secret()
            await self.db.execute("UPDATE users SET totp_pending = ? WHERE id = ?", (pending, row["id"]))
        uri = totp.provisioning_uri(pending, row["username"])
        return LoginOutcome(401, "totp_enrollment_required",
                            "scan the QR code with an authenticator app, then enter its 6-digit code",
                            enrollment={"secret": pending, "uri": uri, "qr_svg": totp.qr_svg(uri)})

    async def _failure(self, row: dict[str, Any] | None, username: str, peer: str, reason: str, *,
                       reserved: bool = False) -> LoginOutcome:
        """Count (unless the attempt was reserved, i.e. counted already), lock at the threshold, audit."""
        details: dict[str, Any] = {"reason": reason, "peer": peer}
        async with self.db.transaction() as tx:
            if row is not None:
                if not reserved:
                    await tx.execute("UPDATE users SET failed_logins = failed_logins + 1 WHERE id = ?", (row["id"],))
                settled = await lockout.settle_failure(tx, row["id"], time.time())
                if settled.locked:
                    await audit.append_in(tx, username[:64], "auth.locked", row["id"],
                                          {"failures": settled.failures, "lockout_s": LOCKOUT_S, "peer": peer})
                details["failures"] = settled.failures
            await audit.append_in(tx, username[:64], "auth.login_failed", row["id"] if row else "", details)
        return LoginOutcome(401, "invalid_credentials", "wrong username, password or code")

    async def _success(self, row: dict[str, Any], peer: str, user_agent: str, *, factor: str = "totp") -> LoginOutcome:
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE users SET failed_logins = 0, locked_until = NULL, last_login = ? WHERE id = ?",
                             (time.time(), row["id"]))
            new = await sessions.create(tx, row["id"], peer=peer, user_agent=user_agent)
            await audit.append_in(tx, row["username"], "auth.login", row["id"], {"session": new.id, "peer": peer,
                                                                                "factor": factor})
        fresh = await users.get_row(self.db, user_id=row["id"])
        assert fresh is not None
        return LoginOutcome(200, "ok", "logged in", session=new, user=users.User.from_row(fresh))
