"""The one place a node connects to NATS: TLS, credentials, reconnect with backoff and jitter, logging.

Every part of the server that talks to NATS (events fan-out, presence, session routing, the object
store) shares the client returned here. NATS is not the system of record, so a node keeps serving
while the bus is away: the client reconnects forever, waiting ``min(cap, base·2^n)`` with full
jitter between attempts so that nodes restarted together do not reconnect in step.

Whoever can publish on NATS is trusted like a node, so :func:`check_secure` refuses a bus off this
machine that is not both encrypted (``tls://`` verified against ``nats_tls_ca``) and authenticated
(a client certificate, or credentials in the URL): ``helpline certs nats`` makes the certificates and
a nats-server configuration with per-node permissions (certs/nats.py). Plaintext to a loopback
address stays allowed (tests, one-box demos), with one warning. There is no switch to allow more:
the secure setup is one command, and a switch would be copied into configurations where it harms.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import random
import re
import socket
import ssl
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.aio.client import Client

from common.config import ConfigError

if TYPE_CHECKING:
    from nats.aio.client import Server

    from server.config import ServerConfig

log = logging.getLogger(__name__)

#: Reconnect backoff: first wait up to BASE_S, doubling up to CAP_S (full jitter).
BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 10.0
#: How long :func:`connect` keeps trying at start before giving up.
START_TIMEOUT_S = 30.0


class BusUnavailable(RuntimeError):
    """NATS could not be reached at start (the node refuses to run half-configured)."""


def redacted(url: str) -> str:
    """The URL(s) without user, password or token: safe to log."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        out.append(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
    return ",".join(out)


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base·2^attempt)]."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** min(attempt, 16)))
    return (rng or random).uniform(0.0, ceiling)


def node_name(config: ServerConfig) -> str:
    """The node's id on the bus (a subject token): ``node_id`` or host name and console port."""
    name = config.node_id or f"{socket.gethostname()}-{config.console_port}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]  # one NATS subject token


_warned_plaintext = False  # one warning per process for a plaintext bus on loopback


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_secure(config: ServerConfig) -> None:
    """ConfigError unless every NATS server off this machine is reached over verified TLS, authenticated.

    Off the machine: ``tls://`` and ``nats_tls_ca`` (the bus CA), and a client certificate
    (``nats_tls_cert``/``nats_tls_key``) or credentials in the URL. On loopback anything goes, with one
    warning when it is plaintext and unauthenticated.
    """
    global _warned_plaintext
    has_cert = bool(config.nats_tls_cert)
    for one in (u.strip() for u in config.nats_url.split(",")):
        if not one:
            continue
        parts = urlsplit(one if "://" in one else "nats://" + one)
        if parts.scheme not in ("nats", "tls"):
            raise ConfigError(f"nats_url: {redacted(one)}: use tls://host:port (or nats:// to a loopback address)")
        host = parts.hostname or ""
        if not host:
            raise ConfigError(f"nats_url: {redacted(one)} names no host")
        tls = parts.scheme == "tls" or bool(config.nats_tls_ca) or has_cert
        authenticated = has_cert or bool(parts.username or parts.password)
        if _is_loopback(host):
            if not (tls or authenticated) and not _warned_plaintext:
                _warned_plaintext = True
                log.warning("NATS on loopback in plaintext without credentials: anything on this machine can "
                            "act as a node on the bus (fine for tests and one-box demos only)",
                            extra={"nats": redacted(one)})
            continue
        missing = []
        if parts.scheme != "tls" or not config.nats_tls_ca:
            missing.append("TLS (nats_url = \"tls://host:port\" and nats_tls_ca = the bus CA's ca.pem)")
        if not authenticated:
            missing.append("a client certificate (nats_tls_cert and nats_tls_key)")
        if missing:
            raise ConfigError(
                f"nats_url names {redacted(one)}, off this machine, without " + " and without ".join(missing)
                + ": anyone who can publish on NATS is trusted like a node. 'helpline certs nats --dir DIR "
                "--node NODE_ID … --server-name NATS_HOST' makes the certificates and nats-server's "
                "configuration (README: Running more than one node)")


def check_node_certificate(config: ServerConfig) -> None:
    """ConfigError when the node's bus certificate (``helpline certs nats``) names another node than ``node_id``.

    Its NATS user may subscribe only ``helpline.node.<its id>.*`` and ``_INBOX.<its id>.>``: under another
    id the node would connect and then miss every routed request and reply, one permissions violation
    at a time. Certificates from elsewhere (no ``OU=helpline-nats-node``) are not checked.
    """
    if not config.nats_tls_cert:
        return
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(Path(config.nats_tls_cert).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"nats_tls_cert: cannot read {config.nats_tls_cert}: {exc}") from exc
    units = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if "helpline-nats-node" in units and names and names[0] != node_name(config):
        raise ConfigError(f"nats_tls_cert is node {names[0]!r}'s bus certificate but this node's id is "
                          f"{node_name(config)!r}: set node_id = \"{names[0]!s}\" (or use this node's certificate)")


#: Every client context made with the node's bus certificate: a renewal loads the new one into each
#: (:func:`reload_client_certificate`), so nats-py's next (re)connect presents it. Weak: closed clients' go.
_CLIENT_CONTEXTS: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()


def reload_client_certificate(config: ServerConfig) -> int:
    """Load the node's renewed bus certificate into the live client contexts; return how many were reloaded.
    Open connections keep the certificate they were made with (TLS checks it at the handshake only)."""
    contexts = list(_CLIENT_CONTEXTS)
    if config.nats_tls_cert:
        for ctx in contexts:
            ctx.load_cert_chain(str(config.nats_tls_cert), str(config.nats_tls_key) if config.nats_tls_key else None)
    return len(contexts)


def tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    """A verifying client context for ``tls://`` URLs (or when a CA/client cert is configured)."""
    wants_tls = any(u.strip().startswith("tls://") for u in config.nats_url.split(","))
    if not (wants_tls or config.nats_tls_ca or config.nats_tls_cert):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                     cafile=str(config.nats_tls_ca) if config.nats_tls_ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.nats_tls_cert:
        ctx.load_cert_chain(str(config.nats_tls_cert),
                            str(config.nats_tls_key) if config.nats_tls_key else None)
        _CLIENT_CONTEXTS.add(ctx)
    return ctx


def _passes_check(config: ServerConfig, url: str) -> bool:
    """Whether ``url`` alone would pass :func:`check_secure` under ``config``'s TLS and credentials."""
    try:
        check_secure(dataclasses.replace(config, nats_url=url))
    except ConfigError:
        return False
    return True


def server_picker(config: ServerConfig) -> Callable[[list[Server], dict[str, Any]], tuple[Server | None, float]]:
    """nats-py's reconnect hook: the least-tried *acceptable* server, after a jittered exponential wait.

    nats-py adds the servers a cluster advertises (``connect_urls``) to its pool with the scheme of the
    current URL, so a node configured with plaintext NATS on loopback would follow an advertised remote
    address in plaintext.  Servers that are not in ``nats_url`` must pass the same :func:`check_secure`
    as configured ones (tls://, the bus CA, a client certificate), or they are never chosen.  The hook
    always names a server (nats-py would otherwise take the pool's first, which may be a refused one).
    """
    configured = {urlsplit(u.strip() if "://" in u else "nats://" + u.strip()).netloc
                  for u in config.nats_url.split(",") if u.strip()}
    verdicts: dict[str, bool] = {}

    def acceptable(server: Server) -> bool:
        where = server.uri.netloc
        if where in configured:
            return True
        if where not in verdicts:
            verdicts[where] = _passes_check(config, server.uri.geturl())
            if not verdicts[where]:
                log.warning("NATS advertised a server this node will not use (not TLS with the bus CA)",
                            extra={"nats": redacted(server.uri.geturl())})
        return verdicts[where]

    def pick(servers: list[Server], _info: dict[str, Any]) -> tuple[Server | None, float]:
        # The configured servers stay in the pool (max_reconnect_attempts=-1), so usable is never empty.
        usable = [s for s in servers if acceptable(s)]
        chosen = min(usable, key=lambda s: s.reconnects)
        return chosen, backoff_delay(chosen.reconnects)

    return pick


async def connect(config: ServerConfig, *, start_timeout_s: float = START_TIMEOUT_S) -> Client | None:
    """Connect to ``config.nats_url``; None when it is empty (one node, no bus).

    Raises :class:`BusUnavailable` when no server answers within ``start_timeout_s``, and ConfigError
    for an insecure bus (:func:`check_secure`). Replies come to ``_INBOX.<node>.…``, the one inbox the
    node's NATS user may read (certs/nats.py).
    """
    if not config.nats_url:
        return None
    check_secure(config)
    check_node_certificate(config)
    where = redacted(config.nats_url)
    name = node_name(config)
    servers = [u.strip() for u in config.nats_url.split(",") if u.strip()]

    quiet = False  # one warning per outage, not one per failed attempt

    async def on_error(exc: Exception) -> None:
        nonlocal quiet
        if not quiet:
            log.warning("NATS error: %s", type(exc).__name__, extra={"nats": where, "reason": str(exc)[:200]})
        quiet = True

    async def on_disconnected() -> None:
        log.warning("NATS disconnected; reconnecting with backoff", extra={"nats": where})

    async def on_reconnected() -> None:
        nonlocal quiet
        quiet = False
        log.info("NATS reconnected", extra={"nats": where})

    async def on_closed() -> None:
        log.info("NATS connection closed", extra={"nats": where})

    client = Client()
    try:
        # The initial attempts go through the same reconnect loop (with its backoff) until the deadline.
        await asyncio.wait_for(client.connect(
            servers, name=f"helpline-{name}", tls=tls_context(config), inbox_prefix=f"_INBOX.{name}",
            connect_timeout=2, allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=1,
            reconnect_to_server_handler=server_picker(config), ping_interval=20, max_outstanding_pings=3,
            error_cb=on_error, disconnected_cb=on_disconnected, reconnected_cb=on_reconnected,
            closed_cb=on_closed), timeout=start_timeout_s)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        await client.close()
        raise BusUnavailable(f"NATS at {where} not reachable within {start_timeout_s:g} s") from exc
    quiet = False
    log.info("connected to NATS", extra={"nats": where, "node": name})
    return client
