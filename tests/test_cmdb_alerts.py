"""Duration alert rules over the samples' own timestamps: a backlog delivered late still opens and
resolves memory/CPU alerts at the right times (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

from protocol.messages import HealthBatch, HealthSample
from server.cmdb import alerts
from server.cmdb.alerts import Transition, duration_transitions
from server.cmdb.ingest import on_health
from server.store import Database
from tests.conftest import add_device
from tests.test_store_backends import FakeConn

if TYPE_CHECKING:
    from server.agent_channel import AgentConnection


def fake_conn(database: Database, device_id: str) -> AgentConnection:
    """The store suite's stand-in connection, typed as the real one for the handlers."""
    return cast("AgentConnection", FakeConn(database, device_id))


def minutes(t0: float, seq0: int, cpu: list[float], *, key: str = "cpu_percent") -> list[HealthSample]:
    """One sample per minute from ``t0`` with the given values (seqs from ``seq0``)."""
    return [HealthSample(seq=seq0 + i, ts=t0 + 60 * i, metrics={key: v}) for i, v in enumerate(cpu)]


def test_transitions_follow_sample_time() -> None:
    """A run above the threshold opens once it has lasted for_s (by sample time) and resolves at the first
    sample not above; a missing value breaks the run; a run already going before the batch counts."""
    values: list[tuple[float, float | None]] = [(0, 95), (300, 95), (600, 95), (660, 50), (720, 95), (780, None)]
    events, start = duration_transitions(values, above=90, for_s=600, streak_start=None, is_open=False)
    assert events == [Transition("open", 600, 600), Transition("resolve", 660)]
    assert start is None
    events, start = duration_transitions([(1000, 99.0)], above=90, for_s=600, streak_start=300, is_open=False)
    assert events == [Transition("open", 1000, 700)] and start == 300
    events, _ = duration_transitions([(1000, 10.0)], above=90, for_s=600, streak_start=None, is_open=True)
    assert events == [Transition("resolve", 1000)]


async def test_backlog_with_a_finished_episode_opens_and_resolves_at_sample_times(db: Database) -> None:
    """A 40-minute backlog arrives hours late: CPU > 90 % for minutes 0–19, then normal. The alert is opened
    at minute 15 and resolved at minute 20 (sample times), though the newest sample is normal."""
    dev = await add_device(db)
    t0 = time.time() - 6 * 3600
    batch = minutes(t0, 1, [95.0] * 20 + [20.0] * 20)
    await on_health(fake_conn(db, dev), HealthBatch(samples=batch))
    assert await alerts.list_alerts(db, status="open", device_id=dev) == []
    [alert] = await alerts.list_alerts(db, status="resolved", device_id=dev)
    assert alert["rule"] == "cpu_high"
    assert alert["opened_at"] == t0 + 15 * 60 and alert["resolved_at"] == t0 + 20 * 60


async def test_backlog_split_across_batches_opens_when_the_run_is_long_enough(db: Database) -> None:
    """Memory > 90 % starts in one batch and continues in the next (each shorter than 10 min alone): the
    alert opens in the second, at the sample where the run reached 10 min; a later normal sample resolves it."""
    dev = await add_device(db)
    conn = fake_conn(db, dev)
    t0 = time.time() - 3 * 3600
    await on_health(conn, HealthBatch(samples=minutes(t0, 1, [50.0] * 3 + [96.0] * 6, key="mem_percent")))
    assert await alerts.list_alerts(db, device_id=dev) == []
    await on_health(conn, HealthBatch(samples=minutes(t0 + 9 * 60, 10, [96.0] * 6, key="mem_percent")))
    [alert] = await alerts.list_alerts(db, status="open", device_id=dev)
    assert alert["rule"] == "memory_high" and alert["opened_at"] == t0 + 13 * 60
    assert "for 660 s" in alert["message"]  # minutes 3..14, at the newest sample
    await on_health(conn, HealthBatch(samples=minutes(t0 + 15 * 60, 16, [40.0], key="mem_percent")))
    [resolved] = await alerts.list_alerts(db, status="resolved", device_id=dev)
    assert resolved["id"] == alert["id"] and resolved["resolved_at"] == t0 + 15 * 60


async def test_duplicate_batch_does_not_reopen_a_resolved_alert(db: Database) -> None:
    """A batch sent again (ack lost) stores nothing and evaluates nothing: a resolved episode stays one alert."""
    dev = await add_device(db)
    conn = fake_conn(db, dev)
    batch = HealthBatch(samples=minutes(time.time() - 7200, 1, [99.0] * 16 + [10.0]))
    await on_health(conn, batch)
    await on_health(conn, batch)
    assert [a["status"] for a in await alerts.list_alerts(db, device_id=dev)] == ["resolved"]
