"""Enrollment over the console listener (server-authenticated TLS).

``GET /api/v1/enroll/ca.pem`` serves the org CA (public; the agent checks it against the
pinned fingerprint). ``POST /api/v1/enroll`` takes ``{"token", "csr"}`` and returns the
device's certificate. Every refusal is a 4xx JSON error and is audited.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from .agent_channel import SERVER_KEY
from .enrollment import EnrollmentError, enroll
from .http_util import json_error

if TYPE_CHECKING:
    from .app import HelplineServer

log = logging.getLogger(__name__)

MAX_ENROLL_BODY = 16 * 1024


@dataclass(frozen=True)
class PublicPki:
    """The public halves handed to enrolling agents, read once at start (no file I/O per request)."""

    ca_pem: bytes
    grant_pub: bytes


PUBLIC_PKI: web.AppKey[PublicPki] = web.AppKey("helpline_public_pki", PublicPki)


async def ca_pem(request: web.Request) -> web.Response:
    return web.Response(body=request.app[PUBLIC_PKI].ca_pem, content_type="application/x-pem-file")


async def post_enroll(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    if request.content_length is not None and request.content_length > MAX_ENROLL_BODY:
        return json_error(413, "too_large", "enrollment request too large")
    try:
        body = json.loads(await request.content.read(MAX_ENROLL_BODY + 1))
    except (ValueError, UnicodeDecodeError):
        return json_error(400, "malformed", "body must be a JSON object")
    if not isinstance(body, dict) or not isinstance(body.get("token"), str) or not isinstance(body.get("csr"), str):
        return json_error(400, "invalid", "expected {\"token\": string, \"csr\": PEM string}")
    try:
        result = await enroll(server.db, server.ca, token=body["token"], csr_pem=body["csr"],
                              lifetime=server.device_cert_lifetime, peer=request.remote or "")
    except EnrollmentError as exc:
        log.warning("enrollment refused", extra={"code": exc.code, "peer": request.remote})
        return json_error(exc.status, exc.code, exc.message)
    log.info("device enrolled", extra={"device_id": result.device_id, "group": result.group})
    return web.json_response({
        "device_id": result.device_id,
        "group": result.group,
        "certificate": result.certificate_pem,
        "grant_public_key": request.app[PUBLIC_PKI].grant_pub.decode(),
        "agent_url": f"wss://{server.config.public_host}:{server.agent_port}/agent",
    })


def setup(server: HelplineServer) -> None:
    server.console_app[PUBLIC_PKI] = PublicPki(server.pki.ca_pem.read_bytes(), server.pki.grant_pub.read_bytes())
    server.console_app.router.add_get("/api/v1/enroll/ca.pem", ca_pem)
    server.console_app.router.add_post("/api/v1/enroll", post_enroll)
