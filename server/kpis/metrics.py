"""The headline KPIs on the metrics endpoint: a prometheus_client Collector over a snapshot.

A scrape must not run SQL on the scraper's thread, so :class:`KpiCollector` only reads the last
:class:`~server.kpis.compute.Figures` that :func:`refresh_forever` computed (every
:data:`REFRESH_S` with jitter, over requests created in the last :data:`WINDOW_S`). Durations are
seconds, rates fractions of 1; a figure without samples is left out rather than exported as 0.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..store import Database
from . import compute, source
from .compute import Figures, Stat

log = logging.getLogger(__name__)

#: Every node recomputes the last 30 days on its own; every 5 minutes (±20 %, so nodes do not align) keeps
#: that load small, and a 30-day figure barely moves in 5 minutes.
REFRESH_S = 300.0
WINDOW_S = 30 * 86400.0
PREFIX = "helpline_kpi"


class KpiCollector(Collector):
    """Exports the last computed figures (all groups, the last 30 days)."""

    def __init__(self) -> None:
        self.figures: Figures | None = None
        self.computed_at: float | None = None

    def update(self, figures: Figures, at: float) -> None:
        self.figures, self.computed_at = figures, at

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        if f is None:
            return
        durations = GaugeMetricFamily(f"{PREFIX}_duration_seconds", "Support desk durations over the last 30 days "
                                      "(mtta, time_to_connect, aht, mttr)", labels=["kpi", "stat"])
        for name, stat in (("mtta", f.mtta), ("time_to_connect", f.time_to_connect), ("aht", f.aht),
                           ("mttr", f.mttr)):
            _add_stat(durations, name, stat)
        yield durations
        csat = GaugeMetricFamily(f"{PREFIX}_csat_score", "CSAT score (1-5) over the last 30 days", labels=["stat"])
        for part in ("mean", "median", "p90"):
            value = getattr(f.csat, part)
            if value is not None:
                csat.add_metric([part], value)
        yield csat
        rates = GaugeMetricFamily(f"{PREFIX}_ratio", "FCR, CSAT satisfied (4-5) and survey response rate",
                                  labels=["kpi"])
        for name, value in (("fcr", f.fcr_rate), ("csat_satisfied", f.csat_satisfied),
                            ("survey_response", f.response_rate)):
            if value is not None:
                rates.add_metric([name], value)
        yield rates
        counts = GaugeMetricFamily(f"{PREFIX}_requests", "Requests created in the last 30 days, by outcome",
                                   labels=["what"])
        for name, count in (("created", f.requests), ("resolved", f.resolved), ("fcr_yes", f.fcr_yes),
                            ("fcr_no", f.fcr_no), ("fcr_pending", f.fcr_pending), ("surveys_asked", f.surveys_asked),
                            ("surveys_answered", f.surveys_answered)):
            counts.add_metric([name], count)
        yield counts
        if self.computed_at is not None:
            yield GaugeMetricFamily(f"{PREFIX}_computed_timestamp_seconds", "When these KPIs were computed",
                                    value=self.computed_at)


def _add_stat(family: GaugeMetricFamily, name: str, stat: Stat) -> None:
    for part in ("mean", "median", "p90"):
        value = getattr(stat, part)
        if value is not None:
            family.add_metric([name, part], value)


async def refresh(collector: KpiCollector, db: Database, now: float) -> None:
    records = await source.load(db, start=now - WINDOW_S, end=None, groups=None)
    collector.update(compute.figures(records, now), now)


async def refresh_forever(collector: KpiCollector, db: Callable[[], Database], *,
                          every_s: float = REFRESH_S) -> None:
    """The server's background task: on the metrics endpoint while it runs, off it once stopped."""
    from server.ops.metrics import register_collector, unregister_collector

    register_collector(collector)
    try:
        while True:
            try:
                await refresh(collector, db(), time.time())
            except Exception as exc:  # the store down, a period too large: keep the last figures, say why
                log.warning("could not compute the KPIs for the metrics endpoint", extra={"error": str(exc)})
            await asyncio.sleep(every_s * random.uniform(0.8, 1.2))
    finally:
        unregister_collector(collector)
        collector.figures = None
