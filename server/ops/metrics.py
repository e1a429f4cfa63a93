"""Prometheus metrics of one server node (prometheus-client, a registry of its own).

``GET /metrics`` on the console port needs the ``[metrics] token`` as a Bearer token: without a
token configured it answers 404 (deny by default: the figures say how big the fleet is and who
is busy). ``[metrics] listen = "127.0.0.1:9464"`` adds a plain-HTTP listener on a loopback
address (refused elsewhere) serving /metrics, /healthz and /readyz without a token.

Figures (all ``helpline_``): ``agents_online``, ``agent_connects_total`` (its rate is the connect
rate), ``sessions_live{state}``, ``tunnel_bytes_total{direction}``, ``ingest_messages_total{kind}``
and ``health_samples_total`` (the ingest rate), ``task_runs{status}``, ``db_pool_size`` and
``db_pool_in_use``, ``event_bus_lag_seconds`` and ``event_bus_backlog`` (the events-table poll,
:mod:`server.events`), ``siem_backlog{sink}``, ``scrape_database_ok``, ``info{version}``, and the
process's ``process_cpu_seconds_total``, ``process_resident_memory_bytes``, open descriptors.

Other areas add figures with :func:`register_collector`: a ``prometheus_client`` custom
collector (an object with ``collect()`` yielding metric families, read at every scrape). It is
process-wide (one server per process in production): a collector must cope with its server
having stopped (yield nothing then), and collect() runs on the event loop, so it reads what is in
memory — keep database reads in the area's own background task::

    from server.ops.metrics import register_collector
    register_collector(MyCollector(server))
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.version import __version__
from protocol.messages import HealthBatch, InventoryReport
from server.errors import ApiError
from server.store.errors import StoreUnavailable

if TYPE_CHECKING:
    from server.agent_channel import AgentConnection
    from server.app import HelplineServer

log = logging.getLogger(__name__)

#: Database figures (task states, bus lag) are read at most this long per scrape.
SCRAPE_DB_DEADLINE_S = 2.0
#: Tunnel byte counts of live relays are folded into the counter this often (and at every scrape).
TUNNEL_SAMPLE_S = 5.0

_EXTRA: list[Collector] = []


def register_collector(collector: Collector) -> None:
    """Add ``collector`` to every node's ``/metrics`` in this process (see the module docstring)."""
    if collector not in _EXTRA:
        _EXTRA.append(collector)


def unregister_collector(collector: Collector) -> None:
    if collector in _EXTRA:
        _EXTRA.remove(collector)


class _Extra:
    """The registered collectors, read at each scrape (so late registrations show)."""

    def collect(self) -> Iterator[Metric]:
        for collector in list(_EXTRA):
            try:
                yield from collector.collect()
            except Exception:
                log.exception("metrics collector %r failed", collector)


class _Tunnels:
    """Monotonic byte totals from the live relays' own counters (``bytes_to_agent``/``bytes_to_technician``).

    Sampled every :data:`TUNNEL_SAMPLE_S` and at each scrape: bytes a session moved after the last
    sample before it ended are not counted.
    """

    def __init__(self) -> None:
        self.total = {"to_agent": 0, "to_technician": 0}
        self._seen: dict[str, tuple[int, int]] = {}

    def sample(self, live: dict[str, Any]) -> None:
        current: dict[str, tuple[int, int]] = {}
        for session_id, session in list(live.items()):
            relay = getattr(session, "relay", None)
            if relay is None:
                continue
            now = (int(relay.bytes_to_agent), int(relay.bytes_to_technician))
            before = self._seen.get(session_id, (0, 0))
            self.total["to_agent"] += max(0, now[0] - before[0])
            self.total["to_technician"] += max(0, now[1] - before[1])
            current[session_id] = now
        self._seen = current


class Metrics:
    """One node's registry: counters fed by hooks, gauges read from the server at scrape time."""

    def __init__(self, server: HelplineServer) -> None:
        self.server = server
        self.registry = CollectorRegistry(auto_describe=True)
        self.connects = Counter("helpline_agent_connects", "Agent control channels accepted (rate: connect rate)",
                                registry=self.registry)
        self.ingest = Counter("helpline_ingest_messages", "Inventory and health messages received from agents",
                              ["kind"], registry=self.registry)
        self.health_samples = Counter("helpline_health_samples", "Health samples received from agents",
                                      registry=self.registry)
        self.tunnels = _Tunnels()
        #: Refreshed by :meth:`refresh` before each scrape (database reads, bounded by a deadline).
        self.task_runs: dict[str, int] = {}
        self.bus_lag_s = 0.0
        self.bus_backlog = 0
        self.database_ok = True
        self.siem_backlog: dict[str, int] = {}
        self.registry.register(_Gauges(self))
        self.registry.register(_Extra())
        ProcessCollector(registry=self.registry)

    # --- hooks -----------------------------------------------------------------------------

    def wire(self) -> None:
        """Count connects and ingest by wrapping the handlers the other areas registered."""
        self.server.on_agent_ready.append(self._on_ready)
        handlers = self.server.agent_handlers
        for message_type, kind in ((InventoryReport, "inventory"), (HealthBatch, "health")):
            if handlers.get(message_type) is not None:
                handlers.replace(message_type, self._counting(kind, handlers.get(message_type)))

    async def _on_ready(self, _conn: AgentConnection) -> None:
        self.connects.inc()

    def _counting(self, kind: str, inner: Any) -> Any:
        async def handler(conn: AgentConnection, message: Any) -> None:
            self.ingest.labels(kind).inc()
            if kind == "health":
                self.health_samples.inc(len(getattr(message, "samples", ()) or ()))
            await inner(conn, message)

        return handler

    # --- scrape ----------------------------------------------------------------------------

    def live_sessions(self) -> dict[str, Any]:
        from server.sessions import SESSIONS

        driver = self.server.console_app.get(SESSIONS)
        return dict(driver.live) if driver is not None else {}

    async def refresh(self) -> None:
        """Read the database figures, at most :data:`SCRAPE_DB_DEADLINE_S`; stale ones stay on failure."""
        self.tunnels.sample(self.live_sessions())
        try:
            async with asyncio.timeout(SCRAPE_DB_DEADLINE_S):
                await self._read_database()
            self.database_ok = True
        except (TimeoutError, StoreUnavailable, OSError) as exc:
            self.database_ok = False
            log.debug("metrics: database figures unavailable: %s", exc)
        except Exception:  # any other driver error: the scrape still answers, scrape_database_ok 0
            self.database_ok = False
            log.warning("metrics: reading the database figures failed", exc_info=True)

    async def _read_database(self) -> None:
        db = self.server.db
        rows = await db.fetchall("SELECT status, COUNT(*) AS n FROM task_runs GROUP BY status")
        self.task_runs = {str(r["status"]): int(r["n"]) for r in rows}
        watcher = self.server.watcher
        if watcher is not None:
            row = await db.fetchone("SELECT MIN(ts) AS oldest, COUNT(*) AS n FROM events WHERE seq > ?",
                                    (watcher.last_seq,))
            oldest = row["oldest"] if row is not None else None
            self.bus_backlog = int(row["n"]) if row is not None else 0
            self.bus_lag_s = max(0.0, time.time() - float(oldest)) if oldest is not None else 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def sample_tunnels(self) -> None:
        """Background task: fold the live relays' byte counts in, so most of an ended session's count stays."""
        while True:
            await asyncio.sleep(TUNNEL_SAMPLE_S)
            self.tunnels.sample(self.live_sessions())


def _pool_figures(db: Any) -> tuple[int, int]:
    """(size, in use) of the database's connection pool: asyncpg's pool, or SQLite's one connection."""
    pool = getattr(db, "_pool", None)
    if pool is not None and hasattr(pool, "get_size") and hasattr(pool, "get_idle_size"):
        size = int(pool.get_size())
        return size, size - int(pool.get_idle_size())
    return 1, 0


class _Gauges:
    """What is read from the server's memory at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # families are only known at collect time (labels); nothing to pre-check

    def collect(self) -> Iterator[Metric]:
        m, server = self.m, self.m.server
        yield _gauge("helpline_info", "This node's Helpline version", 1, {"version": __version__})
        yield _gauge("helpline_agents_online", "Agent control channels open on this node", len(server.connections))
        states = GaugeMetricFamily("helpline_sessions_live", "Sessions this node carries, by state", labels=["state"])
        counts: dict[str, int] = {}
        for session in m.live_sessions().values():
            state = getattr(getattr(session, "machine", None), "state", None)
            name = getattr(state, "value", str(state))
            counts[name] = counts.get(name, 0) + 1
        for name, n in sorted(counts.items()):
            states.add_metric([name], n)
        yield states
        tunnel = _counter_family("helpline_tunnel_bytes", "Bytes relayed through session tunnels", ["direction"])
        for direction, total in m.tunnels.total.items():
            tunnel.add_metric([direction], total)
        yield tunnel
        runs = GaugeMetricFamily("helpline_task_runs", "Task runs by status", labels=["status"])
        for status, n in sorted(m.task_runs.items()):
            runs.add_metric([status], n)
        yield runs
        if server.db is not None:
            size, in_use = _pool_figures(server.db)
            yield _gauge("helpline_db_pool_size", "Database connections open", size)
            yield _gauge("helpline_db_pool_in_use", "Database connections in use", in_use)
        yield _gauge("helpline_event_bus_lag_seconds", "Age of the oldest event this node has not dispatched yet",
                     m.bus_lag_s)
        yield _gauge("helpline_event_bus_backlog", "Events committed that this node has not dispatched yet",
                     m.bus_backlog)
        yield _gauge("helpline_scrape_database_ok", "1 when this scrape could read the database", int(m.database_ok))
        siem = GaugeMetricFamily("helpline_siem_backlog", "Audit records not yet acknowledged by a SIEM sink",
                                 labels=["sink"])
        for sink, n in sorted(m.siem_backlog.items()):
            siem.add_metric([sink], n)
        yield siem


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _counter_family(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


# --- the routes -------------------------------------------------------------------------------

METRICS: web.AppKey[Metrics] = web.AppKey("helpline_metrics", Metrics)


def token_matches(expected: str, header: str | None) -> bool:
    """Constant-time Bearer check (digests compared, so the length leaks nothing either)."""
    if not expected or not header or not header.startswith("Bearer "):
        return False
    given = header.removeprefix("Bearer ").strip()
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


async def scrape(metrics: Metrics) -> web.Response:
    await metrics.refresh()
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def metrics_route(request: web.Request) -> web.Response:
    """Prometheus text exposition; Bearer ``[metrics] token`` (404 when no token is configured)."""
    metrics = request.app[METRICS]
    token = metrics.server.config.metrics.token
    if not token:
        raise ApiError(404, "not_found", "metrics are not served on this port (no [metrics] token)")
    if not token_matches(token, request.headers.get("Authorization")):
        raise ApiError(401, "unauthorized", "a Bearer token for /metrics is required")
    return await scrape(metrics)


async def local_route(request: web.Request) -> web.Response:
    """The loopback listener's /metrics (no token: only local processes reach it)."""
    return await scrape(request.app[METRICS])
