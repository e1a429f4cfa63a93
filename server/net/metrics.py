"""The listeners' connection events as a Prometheus figure: what the per-minute summary line counts.

``helpline_connection_events_total{kind}``: per listener, connections refused at accept (by which
cap), evicted, timed out in the handshake or before their headers, failed handshakes, and how often
accepting paused for handshake slots (``agent_accept_held``). The multi-node benchmark reads it to
say what a reconnect herd ran into.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class ConnectionEvents(Collector):
    """Reads ``totals`` (a :class:`~server.net.ratelog.CountingLog`'s running counts) at each scrape."""

    def __init__(self, totals: Counter[str]) -> None:
        self._totals = totals

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("helpline_connection_events", "connections closed or refused before "
                                     "showing a request, and accept pauses for handshake slots, by kind",
                                     labels=["kind"])
        for kind, count in sorted(self._totals.items()):
            family.add_metric([kind], count)
        yield family
