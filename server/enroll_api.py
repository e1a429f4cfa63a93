"""Enrollment over the console listener (server-authenticated TLS); both routes are public.

``GET /api/v1/enroll/ca.pem`` serves the org TLS root's certificate (the agent checks it against
the pinned fingerprint). ``POST /api/v1/enroll`` takes ``{"token", "csr"}`` (at most 16 KiB: 413 above)
and returns the device's certificate; the one-time token is the credential. Every refusal is
a 4xx JSON error and is audited — at most a few records per address and minute, the rest
counted into one aggregate record (:mod:`.audit_limits`); an address refused more than
:data:`REFUSALS_PER_MINUTE` times in a minute gets 429 with ``Retry-After`` until it slows down.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from aiohttp import web

from . import api
from .api.openapi import add_schemas
from .audit_limits import RefusalLimiter
from .enrollment import enroll

if TYPE_CHECKING:
    from .app import HelplineServer
    from .store import Database

log = logging.getLogger(__name__)

MAX_ENROLL_BODY = 16 * 1024
#: Refused enrollments per client address and minute before it is answered 429.
REFUSALS_PER_MINUTE = 10


class EnrollRequest(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(max_length=512, description="One-time enrollment token (`hlt_…`).")]
    csr: Annotated[str, msgspec.Meta(max_length=MAX_ENROLL_BODY,
                                     description="PEM certificate signing request (ECDSA P-256).")]


SCHEMAS: dict[str, Any] = {
    "Enrollment": {"type": "object", "required": ["device_id", "group", "certificate", "agent_url"], "properties": {
        "device_id": {"type": "string"}, "group": {"type": "string"},
        "certificate": {"type": "string", "description": "The device's client certificate followed by the "
                        "server node's issuing intermediate (PEM chain; it verifies up to the pinned root)."},
        "agent_url": {"type": "string", "description": "`wss://host:port/agent` (mutual TLS)."},
        "agent_server_name": {"type": "string", "description": "The TLS server name (SNI) to send to agent_url "
                              "instead of its host: a server serving agents and the console on one port; "
                              "empty otherwise."}}},
}


@dataclass(frozen=True)
class EnrollHandlers:
    """The public halves handed to enrolling agents are read once at start (no file I/O per request)."""

    server: HelplineServer
    ca_pem: bytes
    refusals: RefusalLimiter = field(default_factory=lambda: RefusalLimiter(REFUSALS_PER_MINUTE, 60.0))

    async def ca_certificate(self, _request: web.Request) -> web.Response:
        """The organisation's CA certificate"""
        return web.Response(body=self.ca_pem, content_type="application/x-pem-file")

    async def post_enroll(self, request: web.Request) -> web.Response:
        """Enroll a device"""
        body = api.body(request, EnrollRequest)
        server, db, peer = self.server, api.db(request), request.remote or ""
        wait = self.refusals.reserve(peer)
        if wait:
            await self._refused(db, peer, "rate_limited")
            return web.json_response({"error": {"code": "rate_limited", "message": "too many refused enrollments "
                                                "from this address; try again later"}},
                                     status=429, headers={"Retry-After": str(math.ceil(wait))})
        try:
            result = await enroll(db, server.ca, token=body.token, csr_pem=body.csr,
                                  lifetime=server.device_cert_lifetime, peer=peer)
        except api.ApiError as exc:
            await self._refused(db, peer, exc.code)  # keeps its place in the refusal budget
            raise
        self.refusals.release(peer)
        log.info("device enrolled", extra={"device_id": result.device_id, "group": result.group})
        return web.json_response({
            "device_id": result.device_id,
            "group": result.group,
            "certificate": result.certificate_pem,
            "agent_url": server.agent_url,
            "agent_server_name": server.agent_server_name,
        })

    async def _refused(self, db: Database, peer: str, code: str) -> None:
        """Audit (and log) a refusal, within the per-address budget; beyond it only counted."""
        if await self.server.audit_throttle.append(db, "enrollment", "device.enroll.refused", "", {"code": code},
                                                   peer=peer):
            log.warning("enrollment refused", extra={"code": code, "peer": peer})


def routes(handlers: EnrollHandlers) -> list[api.Route]:
    return [
        api.Route("GET", "/api/v1/enroll/ca.pem", handlers.ca_certificate, api.PUBLIC,
                  content={"application/x-pem-file": {"schema": {"type": "string"}}},
                  description="The agent checks it against the fingerprint it was given before trusting it."),
        api.Route("POST", "/api/v1/enroll", handlers.post_enroll, api.PUBLIC, body=EnrollRequest,
                  response="Enrollment", max_body=MAX_ENROLL_BODY,
                  description="Public: the one-time token is the credential. Body at most 16 KiB. Refusals are "
                              "audited (a few per address and minute, the rest as one aggregate record).",
                  errors={400: "Malformed body or CSR (`malformed`, `invalid`, `bad_csr`)",
                          401: "Token invalid, used or expired (`invalid_token`, `token_used`, `token_expired`)",
                          503: "The server's issuing intermediate has expired (`issuer_expired`)",
                          429: f"More than {REFUSALS_PER_MINUTE} refused enrollments from this address in a minute "
                               "(`rate_limited`; see Retry-After)"}),
    ]


def setup(server: HelplineServer) -> None:
    handlers = EnrollHandlers(server, server.pki.ca_pem.read_bytes())
    api.add_routes(server.console_app, routes(handlers))
    add_schemas(server.console_app, SCHEMAS)
