"""The one place a node connects to NATS: TLS, credentials, reconnect with backoff and jitter, logging.

Every part of the server that talks to NATS (events fan-out, presence, session routing, the object
store) shares the client returned here. NATS is not the system of record, so a node keeps serving
while the bus is away: the client reconnects forever, waiting ``min(cap, base·2^n)`` with full
jitter between attempts so that nodes restarted together do not reconnect in step.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.aio.client import Client

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
    return ctx


def _pick(servers: list[Server], _info: dict[str, Any]) -> tuple[Server | None, float]:
    """nats-py's reconnect hook: the least-tried server, after a jittered exponential wait."""
    chosen = min(servers, key=lambda s: s.reconnects)
    return chosen, backoff_delay(chosen.reconnects)


async def connect(config: ServerConfig, *, start_timeout_s: float = START_TIMEOUT_S) -> Client | None:
    """Connect to ``config.nats_url``; None when it is empty (one node, no bus).

    Raises :class:`BusUnavailable` when no server answers within ``start_timeout_s``.
    """
    if not config.nats_url:
        return None
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
            servers, name=f"helpline-{name}", tls=tls_context(config),
            connect_timeout=2, allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=1,
            reconnect_to_server_handler=_pick, ping_interval=20, max_outstanding_pings=3,
            error_cb=on_error, disconnected_cb=on_disconnected, reconnected_cb=on_reconnected,
            closed_cb=on_closed), timeout=start_timeout_s)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        await client.close()
        raise BusUnavailable(f"NATS at {where} not reachable within {start_timeout_s:g} s") from exc
    quiet = False
    log.info("connected to NATS", extra={"nats": where, "node": name})
    return client
