"""The node's issuing CA: loaded only from a PKI directory without the root's key, its expiry watched,
and, on a delegated node, renewed from the signer without a restart.

A server holds an intermediate of the offline org TLS root, never the root's key
(:mod:`certs.node`): a compromised server can issue device certificates until its
intermediate expires, not a new intermediate. From two-thirds of the intermediate's life the
server logs a warning at start and every few hours, so it is rotated before agents are locked out;
the same for the NATS bus certificate (``nats_tls_cert``) of a node that renews it by hand
(``certs nats --renew``), an error once it has expired.

A delegated node (``signer.json`` in its PKI directory, :mod:`certs.node_link`) holds an
intermediate of hours to days and renews it itself from half its life: a new key generated here,
a CSR to the signer, retries with backoff (louder as the end nears; once it has expired, it stops
and says the node needs a new token). The new intermediate replaces
``server.ca`` (enrollment and renewal issue from it at once) and the new server chain is loaded
into the live TLS contexts, so new handshakes present it; open connections keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from certs import node_link
from certs.bus_renewal import BusFiles
from certs.errors import CertError, IssuerExpiredError
from certs.node import bus_expiry_warning, check_node_pki, expiry_warning
from certs.pki import CertificateAuthority, load_certificate

from .bus import connection as bus_connection
from .config import ServerConfig

if TYPE_CHECKING:
    from .app import HelplineServer

log = logging.getLogger(__name__)

#: How often a running server looks at its intermediate's expiry again.
WATCH_INTERVAL_S = 6 * 3600.0
#: Retries of a failed renewal: from 5 s, doubling, at most 5 minutes apart (and at most a tenth of what is left).
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 300.0


def load(config: ServerConfig, *, now: datetime | None = None) -> CertificateAuthority:
    """The node's issuing CA, or ``CertError`` when the directory is unsafe (root key) or the CA expired."""
    check_node_pki(config.pki_path, allow_root_key=config.allow_root_key_on_server)
    ca = CertificateAuthority.load(config.pki_path)
    delegated = node_link.SignerLink.load(config.pki_path) is not None
    now = now or datetime.now(UTC)
    if now >= ca.not_after:
        remedy = ("join the signer again with a new token (helpline certs signer add-node, then helpline certs join)"
                  if delegated else "rotate it (helpline certs intermediate)")
        raise IssuerExpiredError(f"the issuing intermediate in {config.pki_path} expired at "
                                 f"{ca.not_after.isoformat()}: {remedy}")
    warn_if_due(ca, now, delegated=delegated)
    warn_bus_if_due(watched_bus_certificate(config), now)
    return ca


def warn_if_due(ca: CertificateAuthority, now: datetime, *, delegated: bool = False) -> bool:
    """Log the intermediate's expiry warning if it is due at ``now``; True if it was."""
    message = expiry_warning(ca.certificate, now, delegated=delegated)
    if message is None:
        return False
    log.warning(message, extra={"not_after": ca.not_after.isoformat()})
    return True


def watched_bus_certificate(config: ServerConfig) -> Path | None:
    """``nats_tls_cert`` when this node renews it by hand; None without one, or when the signer renews it
    with the intermediate (``certs join --bus``: :func:`keep_renewed` watches it)."""
    if config.nats_tls_cert is None:
        return None
    link = node_link.SignerLink.load(config.pki_path)
    return None if link is not None and link.bus else config.nats_tls_cert


def warn_bus_if_due(path: Path | None, now: datetime) -> bool:
    """Log the bus certificate's expiry warning (an error once expired) if due at ``now``; True if it was."""
    if path is None:
        return False
    try:
        certificate = load_certificate(path)
    except (OSError, ValueError) as exc:
        log.error("cannot read the NATS bus certificate %s (%s)", path, exc)
        return True
    found = bus_expiry_warning(certificate, now, path)
    if found is None:
        return False
    level, message = found
    log.log(level, message, extra={"not_after": certificate.not_valid_after_utc.isoformat()})
    return True


async def watch(ca: Callable[[], CertificateAuthority], clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                interval_s: float = WATCH_INTERVAL_S, *, delegated: bool = False, bus: Path | None = None) -> None:
    """Repeat the warnings while the server runs (a server may run for months without a restart)."""
    while True:
        await asyncio.sleep(interval_s)
        now = clock()
        warn_if_due(ca(), now, delegated=delegated)
        warn_bus_if_due(bus, now)


def retry_delay(failures: int, seconds_left: float) -> float:
    """Backoff with jitter after ``failures`` failed renewals, never waiting past a tenth of what is left."""
    delay: float = min(RETRY_FIRST_S * 2.0 ** (failures - 1), RETRY_MAX_S, max(seconds_left / 10, 1.0))
    return delay * random.uniform(0.8, 1.2)


def bus_files(config: ServerConfig, link: node_link.SignerLink) -> BusFiles | None:
    """The node's bus credential to renew with the intermediate (``certs join --bus``), if the config names it."""
    if not link.bus:
        return None
    if not (config.nats_tls_ca and config.nats_tls_cert and config.nats_tls_key):
        log.error("signer.json asks to renew the bus certificate, but nats_tls_ca, nats_tls_cert and nats_tls_key "
                  "are not all configured: renewing the intermediate only")
        return None
    return BusFiles(config.nats_tls_ca, config.nats_tls_cert, config.nats_tls_key)


def next_renewal(ca: CertificateAuthority, link: node_link.SignerLink, bus: BusFiles | None) -> datetime:
    """When to renew: the intermediate's renewal point, or the bus certificate's if that comes first; at once
    when the bus certificate outlives the intermediate (the year-long one 'certs nats' made: a node's disk
    should hold nothing that outlives its intermediate)."""
    due = node_link.renew_at(ca.certificate, link.renew_fraction)
    if bus is not None:
        try:
            certificate = bus.certificate()
            if certificate.not_valid_after_utc > ca.not_after:
                return datetime.min.replace(tzinfo=UTC)
            due = min(due, node_link.renew_at(certificate, link.renew_fraction))
        except (OSError, ValueError) as exc:
            log.error("cannot read the node's bus certificate (%s): renewing it now", exc)
            return datetime.min.replace(tzinfo=UTC)
    return due


async def keep_renewed(server: HelplineServer, link: node_link.SignerLink,
                       clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    """Renew the node's intermediate (and bus certificate, see :func:`bus_files`) from the signer at
    ``link.renew_fraction`` of its life, until it has expired unrenewed: then the signer refuses every proof, so
    this says once what to do and stops."""
    failures = 0
    bus = bus_files(server.config, link)
    while True:
        ca = server.ca
        if clock() >= ca.not_after:
            log.error("the node's intermediate expired at %s without being renewed: it needs a new token "
                      "(helpline certs signer add-node, then helpline certs join); renewal stopped",
                      ca.not_after.isoformat())
            return
        wait = (next_renewal(ca, link, bus) - clock()).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)
            continue
        try:
            renewed = await node_link.renew(server.config.pki_path, link, current=ca, now=clock(), bus=bus)
        except (CertError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            failures += 1
            left = (ca.not_after - clock()).total_seconds()
            delay = retry_delay(failures, left)
            life = (ca.not_after - ca.certificate.not_valid_before_utc).total_seconds()
            level = logging.ERROR if left < life / 4 else logging.WARNING
            log.log(level, "could not renew the node's intermediate from the signer (%s); it expires in %.0f s; "
                    "retrying in %.0f s", exc, left, delay, extra={"failures": failures})
            await asyncio.sleep(delay)
            continue
        failures = 0
        swap(server, renewed)
        if bus is not None:
            reloaded = bus_connection.reload_client_certificate(server.config)
            log.info("renewed the node's bus certificate from the signer",
                     extra={"until": bus.not_after().isoformat(), "contexts": reloaded})


def swap(server: HelplineServer, ca: CertificateAuthority) -> None:
    """Issue from ``ca`` from now on and present the new server chain in new TLS handshakes."""
    server.ca = ca
    for ctx in getattr(server, "tls_contexts", ()):
        ctx.load_cert_chain(certfile=server.pki.server_pem, keyfile=server.pki.server_key)
    log.info("renewed the node's intermediate from the signer", extra={"until": ca.not_after.isoformat()})


def setup(server: HelplineServer) -> None:
    link = node_link.SignerLink.load(server.config.pki_path)
    bus = watched_bus_certificate(server.config)
    server.background.append(lambda: watch(lambda: server.ca, delegated=link is not None, bus=bus))
    if link is not None:
        server.background.append(lambda: keep_renewed(server, link))
