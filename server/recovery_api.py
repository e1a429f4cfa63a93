"""Recovery routes on the console listener (server-authenticated TLS); both public, like enrollment.

``POST /api/v1/enroll/recover/nonce`` ``{"device_id"}`` → ``{"nonce", "expires_in"}``;
``POST /api/v1/enroll/recover`` ``{"device_id", "nonce", "chain", "csr", "signature"}`` → the same
answer as enrollment: a certificate issued exactly as a renewal issues it (:func:`server.renewal.issue`).
What is checked is in :mod:`.recovery`. Every recovery attempt is audited: ``device.recover`` when
it succeeds, ``device.recover.refused`` with the reason otherwise (a few per address and minute, the
rest counted into one aggregate record: :mod:`.audit_limits`). Each address may make
:data:`ATTEMPTS_PER_MINUTE` requests a minute on these routes, counted across all nodes in the shared
database behind each node's own in-memory gate (:class:`.recovery.AttemptBudget`; 429 with ``Retry-After``
beyond). The address is ``request.remote``, as the node observes it: no proxy header is read (none is, anywhere
in server/), so behind a load balancer that rewrites source addresses all clients share one budget; the README
says the balancer must keep client addresses.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from certs.errors import CsrError, IssuerExpiredError
from protocol.recovery import MAX_NONCE_BODY, MAX_RECOVER_BODY, NonceRequest, RecoverRequest

from . import api, audit, recovery, renewal
from .api.openapi import add_schemas

if TYPE_CHECKING:
    from .app import HelplineServer
    from .store import Database

log = logging.getLogger(__name__)

#: Requests (nonces and recoveries, refused or not) per client address and minute, all nodes together.
ATTEMPTS_PER_MINUTE = 20

SCHEMAS: dict[str, Any] = {
    "RecoveryNonce": {"type": "object", "required": ["nonce", "expires_in"], "properties": {
        "nonce": {"type": "string", "description": "64 hex digits; single use."},
        "expires_in": {"type": "number", "description": "Seconds it stays usable."}}},
}


@dataclass(frozen=True)
class RecoveryHandlers:
    server: HelplineServer
    attempts: recovery.AttemptBudget = field(default_factory=lambda: recovery.AttemptBudget(ATTEMPTS_PER_MINUTE))

    async def _rate(self, db: Database, peer: str) -> None:
        """Every request takes a place in the address's budget, shared by all nodes (none is given back)."""
        wait = await self.attempts.take(db, peer)
        if wait:
            raise RateLimited(math.ceil(wait))

    def _enabled(self) -> int:
        days = self.server.config.device_recovery_days
        if days <= 0:
            raise api.ApiError(403, "recovery_disabled", "certificate recovery is off on this server: enroll again")
        return days

    async def post_nonce(self, request: web.Request) -> web.Response:
        """Ask for a recovery nonce"""
        body = api.body(request, NonceRequest)
        peer = request.remote or ""
        try:
            await self._rate(api.db(request), peer)
            self._enabled()
            nonce = await recovery.new_nonce(api.db(request), body.device_id, peer)
        except (api.ApiError, RateLimited) as exc:
            await self._refused(api.db(request), body.device_id, peer, _code(exc), "nonce")
            return _answer(exc)
        return web.json_response({"nonce": nonce, "expires_in": recovery.NONCE_TTL_S})

    async def post_recover(self, request: web.Request) -> web.Response:
        """Recover an expired device certificate"""
        body = api.body(request, RecoverRequest)
        server, db, peer = self.server, api.db(request), request.remote or ""
        try:
            await self._rate(db, peer)
            grace = self._enabled()
            proven = await recovery.prove(db, server.ca.root, device_id=body.device_id, nonce=body.nonce,
                                          chain_pem=body.chain, csr_pem=body.csr, signature_b64=body.signature,
                                          now=datetime.now(UTC), grace_days=grace)
            try:
                chain = await renewal.issue(server, body.device_id, body.csr, via="recovery")
            except CsrError as exc:  # checked already; the issuer's own check has the last word
                raise api.ApiError(400, "bad_csr", f"certificate request refused: {exc}") from exc
            except IssuerExpiredError as exc:
                raise api.ApiError(503, "issuer_expired", "the server's issuing certificate has expired") from exc
        except (api.ApiError, RateLimited) as exc:
            await self._refused(db, body.device_id, peer, _code(exc), "recover")
            return _answer(exc)
        days = round(proven.expired_s / 86400, 2)
        await audit.append(db, f"device:{body.device_id}", "device.recover", body.device_id,
                           {"old_serial": proven.serial, "expired_days": days, "peer": peer})
        log.info("device recovered its expired certificate",
                 extra={"device_id": body.device_id, "expired_days": days, "peer": peer})
        return web.json_response({"device_id": body.device_id, "certificate": chain, "agent_url": server.agent_url,
                                  "agent_server_name": server.agent_server_name})

    async def _refused(self, db: Database, device_id: str, peer: str, code: str, step: str) -> None:
        """Audit (and log) a refusal, within the per-address budget; beyond it only counted."""
        if await self.server.audit_throttle.append(db, "recovery", "device.recover.refused",
                                                   device_id, {"code": code, "step": step}, peer=peer):
            log.warning("certificate recovery refused", extra={"device_id": device_id, "code": code, "step": step,
                                                               "peer": peer})


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("rate limited")
        self.retry_after = retry_after


def _code(exc: api.ApiError | RateLimited) -> str:
    return "rate_limited" if isinstance(exc, RateLimited) else exc.code


def _answer(exc: api.ApiError | RateLimited) -> web.Response:
    if isinstance(exc, RateLimited):
        return web.json_response({"error": {"code": "rate_limited", "message": "too many recovery requests from "
                                            "this address; try again later"}},
                                 status=429, headers={"Retry-After": str(exc.retry_after)})
    return web.json_response({"error": {"code": exc.code, "message": exc.message}}, status=exc.status)


ERRORS = {
    403: "Recovery off (`recovery_disabled`), or refused: `bad_chain`, `device_mismatch`, `bad_proof`, "
         "`revoked`, `not_current` (a key renewed away), `past_grace`, `unknown_device`",
    429: f"More than {ATTEMPTS_PER_MINUTE} requests from this address in a minute (`rate_limited`)",
}


def routes(handlers: RecoveryHandlers) -> list[api.Route]:
    return [
        api.Route("POST", "/api/v1/enroll/recover/nonce", handlers.post_nonce, api.PUBLIC, body=NonceRequest,
                  response="RecoveryNonce", max_body=MAX_NONCE_BODY,
                  description="Public: a single-use nonce (2 minutes) for a device whose certificate expired. "
                              "Given for any well-formed device id (whether it exists is not told here); no "
                              "per-device cap, which anyone could exhaust to block a device.",
                  errors=ERRORS),
        api.Route("POST", "/api/v1/enroll/recover", handlers.post_recover, api.PUBLIC, body=RecoverRequest,
                  response="Enrollment", max_body=MAX_RECOVER_BODY,
                  description="Public: the expired certificate's key, proven over a fresh nonce, is the credential. "
                              "Issues a certificate for the CSR's new key as renewal does (pending until its first "
                              "handshake). Every attempt is audited.",
                  errors={**ERRORS,
                          400: "Malformed body, chain or CSR (`malformed`, `invalid`, `bad_chain`, `bad_csr`, "
                               "`same_key`)",
                          401: "Nonce unknown, used or expired (`bad_nonce`)",
                          409: "The certificate has not expired (`not_expired`): renew over the control channel",
                          503: "The server's issuing intermediate has expired (`issuer_expired`)"}),
    ]


def setup(server: HelplineServer) -> None:
    api.add_routes(server.console_app, routes(RecoveryHandlers(server)))
    add_schemas(server.console_app, SCHEMAS)
