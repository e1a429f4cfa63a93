"""The node's issuing CA: loaded only from a PKI directory without the root's key, its expiry watched.

A server holds an intermediate of the offline org TLS root, never the root's key
(:mod:`certs.node`): a compromised server can issue device certificates until its
intermediate expires, not a new intermediate. From two-thirds of the intermediate's life the
server logs a warning at start and every few hours, so it is rotated before agents are locked out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from certs.errors import IssuerExpiredError
from certs.node import check_node_pki, expiry_warning
from certs.pki import CertificateAuthority

from .config import ServerConfig

if TYPE_CHECKING:
    from .app import HelplineServer

log = logging.getLogger(__name__)

#: How often a running server looks at its intermediate's expiry again.
WATCH_INTERVAL_S = 6 * 3600.0


def load(config: ServerConfig, *, now: datetime | None = None) -> CertificateAuthority:
    """The node's issuing CA, or ``CertError`` when the directory is unsafe (root key) or the CA expired."""
    check_node_pki(config.pki_path, allow_root_key=config.allow_root_key_on_server)
    ca = CertificateAuthority.load(config.pki_path)
    now = now or datetime.now(UTC)
    if now >= ca.not_after:
        raise IssuerExpiredError(f"the issuing intermediate in {config.pki_path} expired at "
                                 f"{ca.not_after.isoformat()}: rotate it (helpline certs intermediate)")
    warn_if_due(ca, now)
    return ca


def warn_if_due(ca: CertificateAuthority, now: datetime) -> bool:
    """Log the intermediate's expiry warning if it is due at ``now``; True if it was."""
    message = expiry_warning(ca.certificate, now)
    if message is None:
        return False
    log.warning(message, extra={"not_after": ca.not_after.isoformat()})
    return True


async def watch(ca: CertificateAuthority, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                interval_s: float = WATCH_INTERVAL_S) -> None:
    """Repeat the warning while the server runs (a server may run for months without a restart)."""
    while True:
        await asyncio.sleep(interval_s)
        warn_if_due(ca, clock())


def setup(server: HelplineServer) -> None:
    server.background.append(lambda: watch(server.ca))
