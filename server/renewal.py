"""Certificate renewal over the control channel.

The agent generates a new key and sends a CSR at two-thirds of its certificate's life;
the server signs it for the same device id and records the new serial as *pending*. The
first handshake with the new certificate promotes it; from then on the old one is refused.

The answer is a chain (the certificate, then this node's intermediate, and on a delegated node the
signer's delegation: :mod:`certs.delegation`); it ends with that intermediate. A device whose
certificate another intermediate issued (before a rotation, or on another node) is told
to renew at once in the welcome, so a retired intermediate stops mattering quickly.

:func:`issue` is the one way a device gets a new certificate for a key it generated: renewal over the
control channel and recovery of an expired certificate on the console port (:mod:`.recovery`) both
call it, so a recovered certificate is exactly a renewed one (pending until its first handshake).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from certs.errors import CsrError, IssuerExpiredError
from certs.pki import certificate_serial_hex
from protocol.messages import CertRenewRequest, CertRenewResponse

from . import audit, devices, recovery

if TYPE_CHECKING:
    from .agent_channel import AgentConnection
    from .app import HelplineServer

log = logging.getLogger(__name__)


async def issue(server: HelplineServer, device_id: str, csr_pem: str, *, via: str = "renewal") -> str:
    """Sign ``csr_pem`` for ``device_id``, record it as the pending certificate, audit; the PEM chain.

    Raises ``CsrError`` (malformed CSR, not P-256) and ``IssuerExpiredError`` (this node's intermediate ended).
    """
    ca = server.ca  # once: an issuer swap during the awaits below must not pair this cert with another chain
    try:
        cert = ca.sign_device_csr(csr_pem.encode(), device_id, now=datetime.now(UTC),
                                         lifetime=server.device_cert_lifetime)
    except IssuerExpiredError:
        log.error("cannot renew device certificates: the issuing intermediate has expired")
        raise
    serial = certificate_serial_hex(cert)
    await devices.set_pending_certificate(server.db, device_id, serial, cert.not_valid_after_utc.timestamp())
    async with server.db.transaction() as tx:  # what recovery compares, byte for byte
        await recovery.record_certificate(tx, device_id, cert)
    await audit.append(server.db, f"device:{device_id}", "device.cert.issue", device_id, {"serial": serial, "via": via})
    log.info("renewed device certificate", extra={"device_id": device_id, "serial": serial, "via": via})
    return ca.chain_pem(cert).decode()


async def handle_renew(conn: AgentConnection, message: CertRenewRequest) -> None:
    try:
        chain = await issue(conn.server, conn.device_id, message.csr)
    except CsrError as exc:
        await conn.reply_error("bad_csr", f"certificate request refused: {exc}", message.id)
        return
    except IssuerExpiredError:
        await conn.reply_error("issuer_expired", "the server's issuing certificate has expired", message.id)
        return
    await conn.send(CertRenewResponse(in_reply_to=message.id, certificate=chain))


async def renew_if_foreign(conn: AgentConnection) -> dict[str, Any]:
    """Welcome field: renew now when this node's current intermediate did not issue the device's certificate."""
    if conn.server.ca.issued(conn.certificate):
        return {}
    log.info("device certificate from another intermediate; asking for renewal", extra={"device_id": conn.device_id})
    return {"cert_renew_due": True}


def setup(server: HelplineServer) -> None:
    server.agent_handlers.register(CertRenewRequest, handle_renew)
    server.agent_handlers.welcome_fields.append(renew_if_foreign)
