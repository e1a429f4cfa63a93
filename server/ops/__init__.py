"""Running the server like infrastructure: metrics, health endpoints, the SIEM stream, the
running-server lock that ``helpline admin restore`` checks (:mod:`.lock`, taken by
``HelplineServer.start`` before it opens the database; backup/restore: :mod:`.backup`).

:func:`setup` is composed last (it wraps the handlers the other areas registered, to count them).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server import api

from .health import HEALTH, Health, healthz, readyz
from .metrics import METRICS, Metrics, local_route, metrics_route

if TYPE_CHECKING:
    from server.app import HelplineServer

log = logging.getLogger(__name__)

_TEXT = {"text/plain": {"schema": {"type": "string"}}}


def setup(server: HelplineServer) -> None:
    metrics = Metrics(server)
    metrics.wire()
    health = Health(server)
    server.console_app[METRICS] = metrics
    server.console_app[HEALTH] = health
    api.add_routes(server.console_app, [
        api.Route("GET", "/healthz", healthz, api.PUBLIC, summary="Liveness: the process answers",
                  response=dict[str, Any]),
        api.Route("GET", "/readyz", readyz, api.PUBLIC, response=dict[str, Any], errors={503: "not ready"},
                  summary="Readiness: database reachable, migrations current, listeners up (503 with reasons)"),
        api.Route("GET", "/metrics", metrics_route, api.PUBLIC, content=_TEXT,
                  errors={401: "Missing or wrong Bearer token", 404: "No [metrics] token configured: not served"},
                  summary="Prometheus metrics (Bearer [metrics] token; 404 without one configured)"),
    ])
    server.background.append(metrics.sample_tunnels)
    if server.config.metrics.listen:
        host, port = parse_listen(server.config.metrics.listen)
        server.background.append(lambda: _local_listener(metrics, health, host, port))
    from .siem.stream import setup as setup_siem

    setup_siem(server, metrics)


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:9464`` or ``[::1]:9464``; a non-loopback address is refused (no token there)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError as exc:
        raise ValueError(f"[metrics] listen {text!r}: expected ADDRESS:PORT") from exc
    if not address.is_loopback:
        raise ValueError(f"[metrics] listen {text!r}: only a loopback address (the listener has no token)")
    return host, number


async def _local_listener(metrics: Metrics, health: Health, host: str, port: int) -> None:
    """Plain HTTP on a loopback address: /metrics without a token, /healthz, /readyz."""
    app = web.Application(client_max_size=1024)
    app[METRICS] = metrics
    app[HEALTH] = health
    app.router.add_get("/metrics", local_route)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("metrics listener on http://%s:%d/metrics", host, port)
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
