"""``ssl.SSLContext`` factories for both ends of Helpline's TLS connections.

All contexts are TLS 1.3 only.  Both ends trust only the org TLS **root**
(``ca.pem``), never the system store: a device must not accept a server
certificate from some public CA, and the agent listener must not accept a
client certificate that no intermediate of the org root issued.  Each side
presents its chain (leaf, then the issuing intermediate: ``server.pem`` and a
device's ``cert.pem`` are chain files), so a peer that knows only the root can
build the path, whichever server node issued the certificate.  Revocation and
device status are checked by the server after the handshake (it owns that
state), not here.
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
    # Names are SANs only. Besides, OpenSSL would otherwise match a device's CN that looks like a
    # host name ("a.b") against the intermediate's DNS name constraints and refuse the device.
    ctx.hostname_checks_common_name = False
    return ctx


def agent_listener_context(ca_pem: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Server side of the agent listener: mutual TLS, a client certificate chaining to the org root required.

    ``ca_pem`` is the root's certificate; ``cert`` is the server's chain file (leaf + intermediate)."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    ctx.load_verify_locations(cafile=ca_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def console_listener_context(cert: Path, key: Path) -> ssl.SSLContext:
    """Server side of the console listener: server certificate chain only (technicians log in in-band)."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    return ctx


def agent_client_context(ca_pem: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """Client side used by the agent: verifies the server's chain against the org root only, checks
    the hostname, and presents the device certificate chain when ``cert`` and ``key`` are given
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
