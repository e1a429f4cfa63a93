"""``ssl.SSLContext`` factories for both ends of Helpline's TLS connections.

All contexts are TLS 1.3 only.  The agent side trusts only the org CA, never
the system store: a device must not accept a server certificate from some
public CA, and the agent listener must not accept a client certificate that
the org CA did not issue.  Revocation and device status are checked by the
server after the handshake (it owns that state), not here.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def _base(protocol: int) -> ssl.SSLContext:
    """A fresh context (no default CAs loaded) limited to TLS 1.3."""
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # RFC 5280 strictness (the default from Python 3.13): our certificates satisfy it, others needn't pass.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def agent_listener_context(ca_pem: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Server side of the agent listener: mutual TLS, client certificate required from the org CA."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    ctx.load_verify_locations(cafile=ca_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def console_listener_context(cert: Path, key: Path) -> ssl.SSLContext:
    """Server side of the console listener: server certificate only (technicians log in in-band)."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    return ctx


def agent_client_context(ca_pem: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """Client side used by the agent: verifies the server against the org CA only, checks the
    hostname, and presents the device certificate when ``cert`` and ``key`` are given
    (enrollment connects without one)."""
    if (cert is None) != (key is None):
        raise ValueError("give both the device certificate and its key, or neither")
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=ca_pem)
    if cert is not None and key is not None:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    return ctx
