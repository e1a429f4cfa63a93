"""Health time series: idempotent batch ingest, 5-minute rollups, retention and queries.

Samples are keyed by (device, seq), so a batch sent twice (agent restarted before the ack
arrived) is stored once. Rollups are maintained in the same transaction as the raw rows —
only for rows actually inserted — so late backlogs land in the right bucket and duplicates
never count twice. Raw rows live 7 days, rollups 90 days (:func:`apply_retention`).

A batch is judged sample by sample (:func:`split_batch`): a wrongly typed or oversized sample
is refused alone and named in the ack, the rest are stored. Refusing the whole batch made the
agent resend the same oldest batch forever (issue 12).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from protocol import limits
from protocol.messages import HealthGap, HealthSample, SampleRejected
from server.store import Database, Row, Transaction

ROLLUP_S = 300
RAW_RETENTION_S = 7 * 86400
ROLLUP_RETENTION_S = 90 * 86400
MAX_METRICS_BYTES = limits.MAX_HEALTH_METRICS_BYTES

NUMERIC_METRICS = ("cpu_percent", "load1", "load5", "load15", "mem_percent", "swap_percent", "battery_percent",
                   "uptime_s", "net_rx_bps", "net_tx_bps")


class HealthRejected(Exception):
    """The batch as a whole is malformed (seqs out of order, a backwards gap): nothing is stored."""

    code = "invalid"


_encode = msgspec.json.Encoder().encode


def _is_number(value: Any) -> bool:
    """int or finite float (not bool); hot path: one type check, ``x - x == 0`` rejects inf/nan."""
    kind = type(value)
    return kind is int or (kind is float and value - value == 0)


def check_sample(sample: HealthSample) -> SampleRejected | None:
    """Why this one sample cannot be stored (wrongly typed metrics, over the size limit), or None."""
    m = sample.metrics
    for key in NUMERIC_METRICS:
        if m.get(key) is not None and not _is_number(m[key]):
            return SampleRejected(seq=sample.seq, code="invalid", reason=f"{key} must be a number or null")
    disks = m.get("disks", {})
    if disks is not None and (not isinstance(disks, dict) or not all(
            isinstance(k, str) and _is_number(v) for k, v in disks.items())):
        return SampleRejected(seq=sample.seq, code="invalid", reason="disks must map mount points to numbers")
    size = len(_encode(m))
    if size > MAX_METRICS_BYTES:
        return SampleRejected(seq=sample.seq, code="too_large",
                              reason=f"metrics are {size} bytes (limit {MAX_METRICS_BYTES})")
    return None


def split_batch(samples: Sequence[HealthSample], gaps: Sequence[HealthGap]
                ) -> tuple[list[HealthSample], list[SampleRejected]]:
    """The samples to store and the ones refused (each with its reason).

    Raises :class:`HealthRejected` only for what no single sample is to blame for: seqs that do not
    increase within the batch, a gap that runs backwards.
    """
    previous = -1
    for sample in samples:
        if sample.seq <= previous:
            raise HealthRejected(f"sequence numbers must increase within a batch ({sample.seq} after {previous})")
        previous = sample.seq
    for gap in gaps:
        if gap.to_seq < gap.from_seq:
            raise HealthRejected(f"gap {gap.from_seq}..{gap.to_seq} runs backwards")
    good: list[HealthSample] = []
    rejected: list[SampleRejected] = []
    for sample in samples:
        problem = check_sample(sample)
        if problem is None:
            good.append(sample)
        else:
            rejected.append(problem)
    return good, rejected


def _num(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def _row(device_id: str, s: HealthSample) -> tuple[Any, ...]:
    m = s.metrics
    disks = m.get("disks") or {}
    disk_min = min((float(v) for v in disks.values()), default=None)
    return (device_id, s.seq, s.ts, _num(m.get("cpu_percent")), _num(m.get("mem_percent")),
            _num(m.get("swap_percent")), _num(m.get("load1")), disk_min, _num(m.get("battery_percent")),
            _num(m.get("net_rx_bps")), _num(m.get("net_tx_bps")), _encode(m).decode())


@dataclass(frozen=True)
class IngestResult:
    up_to: int
    inserted: int
    duplicates: int
    #: The samples actually stored by this batch (alerts are evaluated over these).
    fresh: Sequence[HealthSample]


async def ingest(tx: Transaction, device_id: str, samples: Sequence[HealthSample], gaps: Sequence[HealthGap],
                 now: float, *, rejected: Sequence[SampleRejected] = ()) -> IngestResult:
    """Store a validated batch; duplicates (same seq) are skipped. Returns the seq the agent may drop up to.

    ``rejected`` (from :func:`split_batch`) are the batch's refused samples: not stored, but covered by
    the ack and the device's highest seq like the rest, so the agent moves past them.
    """
    state = await tx.fetchone("SELECT max_seq FROM health_state WHERE device_id = ?", (device_id,))
    max_seq = int(state["max_seq"]) if state else -1
    existing: set[int] = set()
    if samples:
        rows = await tx.fetchall("SELECT seq FROM health_samples WHERE device_id = ? AND seq >= ? AND seq <= ?",
                                 (device_id, samples[0].seq, samples[-1].seq))
        existing = {int(r["seq"]) for r in rows}
    fresh = [s for s in samples if s.seq not in existing]
    if fresh:
        await tx.executemany(
            "INSERT INTO health_samples (device_id, seq, ts, cpu, mem, swap, load1, disk_min_free, battery, net_rx,"
            " net_tx, metrics) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, seq) DO NOTHING",
            [_row(device_id, s) for s in fresh])
        await _add_rollups(tx, device_id, fresh)
    if gaps:
        await tx.executemany(
            "INSERT INTO health_gaps (device_id, from_seq, to_seq, dropped, reported_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (device_id, from_seq) DO UPDATE SET to_seq = excluded.to_seq, dropped = excluded.dropped",
            [(device_id, g.from_seq, g.to_seq, g.dropped, now) for g in gaps])
    top = max([max_seq, *(s.seq for s in samples), *(g.to_seq for g in gaps), *(r.seq for r in rejected)])
    if top != max_seq:
        last_ts = samples[-1].ts if samples else now
        await tx.execute("INSERT INTO health_state (device_id, max_seq, last_ts) VALUES (?, ?, ?)"
                         " ON CONFLICT (device_id) DO UPDATE SET max_seq = excluded.max_seq,"
                         " last_ts = excluded.last_ts",
                         (device_id, top, last_ts))
    # Ack exactly what this batch covered: never more than the agent sent us in it.
    batch_top = max([0, *(s.seq for s in samples), *(g.to_seq for g in gaps), *(r.seq for r in rejected)])
    return IngestResult(batch_top, len(fresh), len(samples) - len(fresh), fresh)


async def _add_rollups(tx: Transaction, device_id: str, samples: Sequence[HealthSample]) -> None:
    buckets: dict[float, list[Any]] = {}
    for s in samples:
        b = buckets.setdefault(math.floor(s.ts / ROLLUP_S) * ROLLUP_S, [0, 0.0, 0, None, 0.0, 0, None, None])
        cpu, mem = _num(s.metrics.get("cpu_percent")), _num(s.metrics.get("mem_percent"))
        disks = s.metrics.get("disks") or {}
        disk = min((float(v) for v in disks.values()), default=None)
        b[0] += 1
        if cpu is not None:
            b[1] += cpu
            b[2] += 1
            b[3] = cpu if b[3] is None else max(b[3], cpu)
        if mem is not None:
            b[4] += mem
            b[5] += 1
            b[6] = mem if b[6] is None else max(b[6], mem)
        if disk is not None:
            b[7] = disk if b[7] is None else min(b[7], disk)
    await tx.executemany(
        "INSERT INTO health_rollups (device_id, bucket, n, cpu_sum, cpu_n, cpu_max, mem_sum, mem_n, mem_max,"
        " disk_min_free) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, bucket) DO UPDATE SET"
        " n = health_rollups.n + excluded.n, cpu_sum = health_rollups.cpu_sum + excluded.cpu_sum,"
        " cpu_n = health_rollups.cpu_n + excluded.cpu_n,"
        " cpu_max = CASE WHEN health_rollups.cpu_max IS NULL OR excluded.cpu_max > health_rollups.cpu_max"
        " THEN excluded.cpu_max ELSE health_rollups.cpu_max END,"
        " mem_sum = health_rollups.mem_sum + excluded.mem_sum, mem_n = health_rollups.mem_n + excluded.mem_n,"
        " mem_max = CASE WHEN health_rollups.mem_max IS NULL OR excluded.mem_max > health_rollups.mem_max"
        " THEN excluded.mem_max ELSE health_rollups.mem_max END,"
        " disk_min_free = CASE WHEN health_rollups.disk_min_free IS NULL"
        " OR excluded.disk_min_free < health_rollups.disk_min_free"
        " THEN excluded.disk_min_free ELSE health_rollups.disk_min_free END",
        [(device_id, bucket, *values) for bucket, values in buckets.items()])


async def apply_retention(db: Database, now: float) -> tuple[int, int]:
    """Drop raw samples older than 7 days and rollups older than 90 days; return the counts."""
    raw = await db.execute("DELETE FROM health_samples WHERE ts < ?", (now - RAW_RETENTION_S,))
    rolled = await db.execute("DELETE FROM health_rollups WHERE bucket < ?", (now - ROLLUP_RETENTION_S,))
    return raw, rolled


async def max_seq(db: Database, device_id: str) -> int:
    """The highest seq stored for the device (samples and gaps; 0 if none): sent in ``welcome``."""
    row = await db.fetchone("SELECT max_seq FROM health_state WHERE device_id = ?", (device_id,))
    return max(0, int(row["max_seq"])) if row else 0


async def seqs(db: Database, device_id: str) -> list[int]:
    rows = await db.fetchall("SELECT seq FROM health_samples WHERE device_id = ? ORDER BY seq", (device_id,))
    return [int(r["seq"]) for r in rows]


async def gaps_of(db: Database, device_id: str) -> list[Row]:
    return await db.fetchall("SELECT from_seq, to_seq, dropped, reported_at FROM health_gaps WHERE device_id = ?"
                             " ORDER BY from_seq", (device_id,))


def _avg(total: float, n: int) -> float | None:
    return round(total / n, 2) if n else None


async def series(db: Database, device_id: str, *, start: float, end: float, step: float, now: float
                 ) -> list[dict[str, Any]]:
    """Points of ``step`` seconds in [start, end): from raw samples when the range is within raw
    retention and the step is under 5 minutes, otherwise from the 5-minute rollups."""
    use_raw = step < ROLLUP_S and start >= now - RAW_RETENTION_S
    points: dict[float, list[Any]] = {}

    def bucket(ts: float) -> list[Any]:
        key = start + math.floor((ts - start) / step) * step
        return points.setdefault(key, [0, 0.0, 0, None, 0.0, 0, None, None])

    if use_raw:
        rows = await db.fetchall("SELECT ts, cpu, mem, disk_min_free FROM health_samples WHERE device_id = ?"
                                 " AND ts >= ? AND ts < ? ORDER BY ts", (device_id, start, end))
        for r in rows:
            b = bucket(r["ts"])
            b[0] += 1
            for col, si, ni, mi in (("cpu", 1, 2, 3), ("mem", 4, 5, 6)):
                if r[col] is not None:
                    b[si] += r[col]
                    b[ni] += 1
                    b[mi] = r[col] if b[mi] is None else max(b[mi], r[col])
            if r["disk_min_free"] is not None:
                b[7] = r["disk_min_free"] if b[7] is None else min(b[7], r["disk_min_free"])
    else:
        rows = await db.fetchall("SELECT * FROM health_rollups WHERE device_id = ? AND bucket >= ? AND bucket < ?"
                                 " ORDER BY bucket", (device_id, start, end))
        for r in rows:
            b = bucket(r["bucket"])
            b[0] += r["n"]
            b[1] += r["cpu_sum"]
            b[2] += r["cpu_n"]
            b[4] += r["mem_sum"]
            b[5] += r["mem_n"]
            for idx, col, pick in ((3, "cpu_max", max), (6, "mem_max", max), (7, "disk_min_free", min)):
                if r[col] is not None:
                    b[idx] = r[col] if b[idx] is None else pick(b[idx], r[col])
    return [{"ts": ts, "samples": b[0], "cpu_avg": _avg(b[1], b[2]), "cpu_max": b[3], "mem_avg": _avg(b[4], b[5]),
             "mem_max": b[6], "disk_min_free": b[7]} for ts, b in sorted(points.items())]
