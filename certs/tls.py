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

import socket
import ssl
from pathlib import Path


def _base(protocol: int) -> ssl.SSLContext:
    """A fresh context (no default CAs loaded) limited to TLS 1.3."""
    ctx = ssl.SSLContext(protocol)
    _limit(ctx)
    return ctx


def _limit(ctx: ssl.SSLContext) -> None:
    """TLS 1.3 only, strict X.509, names from SANs only."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # RFC 5280 strictness (the default from Python 3.13): our certificates satisfy it, others needn't pass.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    # Names are SANs only. Besides, OpenSSL would otherwise match a device's CN that looks like a
    # host name ("a.b") against the intermediate's DNS name constraints and refuse the device.
    ctx.hostname_checks_common_name = False


def agent_listener_context(ca_pem: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Server side of the agent listener: mutual TLS, a client certificate chaining to the org root required.

    ``ca_pem`` is the root's certificate; ``cert`` is the server's chain file (leaf + intermediate)."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    ctx.load_verify_locations(cafile=ca_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED
    # No TLS 1.3 session tickets: agents never resume (asyncio offers no session reuse, and a failover goes to
    # another node's keys anyway), and OpenSSL's two default tickets cost ~40 % of the server's side of the
    # handshake (2.2-2.5 → 1.3-1.5 ms of CPU per connect; README, "Runs after the pool and snapshot changes").
    ctx.num_tickets = 0
    return ctx


def console_listener_context(cert: Path, key: Path) -> ssl.SSLContext:
    """Server side of the console listener: server certificate chain only (technicians log in in-band)."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    return ctx


def _refuse_names(ctx: ssl.SSLContext, agent_name: str, *, agent: bool) -> None:
    """Make ``ctx`` refuse a handshake whose server name belongs to the other route of the one port:
    the listener chose ``ctx`` from its own reading of the ClientHello, and OpenSSL's must agree."""
    wanted = agent_name.lower()

    def check(_conn: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if ((name or "").lower() == wanted) != agent:
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        return None

    ctx.sni_callback = check  # type: ignore[assignment]  # typeshed's callback type is SSLSocket-only


def single_port_contexts(ca_pem: Path, cert: Path, key: Path, agent_name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The agent's and the console's listener contexts for one port shared by both (server/net/sni.py):
    as :func:`agent_listener_context` and :func:`console_listener_context`, and each refuses the
    other's server name (the agent's only ``agent_name``, the console's anything else)."""
    agent = agent_listener_context(ca_pem, cert, key)
    console = console_listener_context(cert, key)
    _refuse_names(agent, agent_name, agent=True)
    _refuse_names(console, agent_name, agent=False)
    return agent, console


class _NamedServerContext(ssl.SSLContext):
    """A client context that sends one server name (SNI) and checks the certificate against it,
    whatever host was dialled: the agent reaches a one-port server at its address under the agent
    name, which needs no DNS record (as ``curl --connect-to`` does)."""

    server_name: str

    def wrap_socket(self, sock: socket.socket, server_side: bool = False, do_handshake_on_connect: bool = True,
                    suppress_ragged_eofs: bool = True, server_hostname: str | bytes | None = None,
                    session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
        return super().wrap_socket(sock, server_side, do_handshake_on_connect, suppress_ragged_eofs,
                                   self.server_name, session)

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name, session)


def agent_client_context(ca_pem: Path, cert: Path | None, key: Path | None, *,
                         server_name: str | None = None) -> ssl.SSLContext:
    """Client side used by the agent: verifies the server's chain against the org root only, checks
    the hostname, and presents the device certificate chain when ``cert`` and ``key`` are given
    (enrollment connects without one). ``server_name``: the name sent and checked instead of the
    host connected to (a one-port server's agent name)."""
    if (cert is None) != (key is None):
        raise ValueError("give both the device certificate and its key, or neither")
    if server_name:
        named = _NamedServerContext(ssl.PROTOCOL_TLS_CLIENT)
        named.server_name = server_name
        _limit(named)
        ctx: ssl.SSLContext = named
    else:
        ctx = _base(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=ca_pem)
    if cert is not None and key is not None:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    return ctx


def certificate_names(cert: Path) -> list[str]:
    """The DNS names of the first certificate in ``cert`` (a server's chain file), lower case: the
    one-port server checks at start that its certificate carries the agent name."""
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in san.get_values_for_type(x509.DNSName)]
