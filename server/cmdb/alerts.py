"""Alert rules: evaluated on ingest (health, inventory) and periodically (offline agents).

Duration rules (memory, CPU) walk the newly stored samples in their own time order, so a
backlog delivered hours late still opens an alert for an episode inside it — and resolves it
if the episode ended inside it too — with the samples' times, not the arrival time.

At most one open alert per (device, rule, subject) — a partial unique index enforces it —
so repeated evaluations update instead of duplicating; when the condition clears the alert
is resolved automatically. Opening and resolving enqueue a webhook delivery in the same
transaction (see :mod:`.webhooks`), so a delivery exists exactly when the record does.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol.messages import HealthSample
from server.store import Database, Row, Transaction

from . import settings

log = logging.getLogger(__name__)

SEVERITY_RANK = {"warning": 1, "critical": 2}


async def _refresh_count(tx: Transaction, device_id: str) -> None:
    await tx.execute("INSERT INTO cmdb_devices (device_id) VALUES (?) ON CONFLICT (device_id) DO NOTHING",
                     (device_id,))
    await tx.execute("UPDATE cmdb_devices SET alerts_open = (SELECT COUNT(*) FROM alerts"
                     " WHERE alerts.device_id = ? AND status = 'open') WHERE device_id = ?", (device_id, device_id))


async def _enqueue(tx: Transaction, event: str, alert: Row) -> None:
    hook = await settings.webhook(tx)
    if not hook["url"]:
        return
    payload = {"event": event, "alert": describe(alert)}
    await tx.execute("INSERT INTO webhook_deliveries (url, payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?)",
                     (hook["url"], json.dumps(payload), time.time(), time.time()))


async def raise_alert(tx: Transaction, device_id: str, rule: str, subject: str, severity: str, message: str,
                      now: float) -> str | None:
    """Open (or re-grade) the alert; returns "opened"/"updated" or None when nothing changed."""
    row = await tx.fetchone("SELECT * FROM alerts WHERE device_id = ? AND rule = ? AND subject = ? AND status = 'open'",
                            (device_id, rule, subject))
    if row is not None:
        if row["severity"] == severity and row["message"] == message:
            return None
        await tx.execute("UPDATE alerts SET severity = ?, message = ?, updated_at = ? WHERE id = ?",
                         (severity, message, now, row["id"]))
        if row["severity"] != severity:
            fresh = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", (row["id"],))
            assert fresh is not None
            await _enqueue(tx, "alert.updated", fresh)
        return "updated"
    await tx.execute("INSERT INTO alerts (device_id, rule, subject, severity, status, message, opened_at, updated_at)"
                     " VALUES (?, ?, ?, ?, 'open', ?, ?, ?)", (device_id, rule, subject, severity, message, now, now))
    created = await tx.fetchone("SELECT * FROM alerts WHERE device_id = ? AND rule = ? AND subject = ?"
                                " AND status = 'open'", (device_id, rule, subject))
    assert created is not None
    await _refresh_count(tx, device_id)
    await _enqueue(tx, "alert.opened", created)
    log.info("alert opened", extra={"device_id": device_id, "rule": rule, "subject": subject, "severity": severity})
    return "opened"


async def resolve(tx: Transaction, device_id: str, rule: str, subject: str | None, now: float,
                  keep: set[str] | None = None) -> int:
    """Resolve open alerts of ``rule`` (one subject, or all except ``keep`` when subject is None)."""
    sql = "SELECT * FROM alerts WHERE device_id = ? AND rule = ? AND status = 'open'"
    params: list[Any] = [device_id, rule]
    if subject is not None:
        sql += " AND subject = ?"
        params.append(subject)
    rows = [r for r in await tx.fetchall(sql, params) if keep is None or r["subject"] not in keep]
    for row in rows:
        await tx.execute("UPDATE alerts SET status = 'resolved', resolved_at = ?, updated_at = ? WHERE id = ?",
                         (now, now, row["id"]))
        await _enqueue(tx, "alert.resolved", {**row, "status": "resolved", "resolved_at": now})
        log.info("alert resolved", extra={"device_id": device_id, "rule": rule, "subject": row["subject"]})
    if rows:
        await _refresh_count(tx, device_id)
    return len(rows)


async def _streak_start(tx: Transaction, device_id: str, column: str, above: float, before: float) -> float | None:
    """Start of the unbroken run of stored samples with ``column > above`` that the last sample
    strictly before ``before`` belongs to (None if that sample isn't above, or there is none)."""
    ok = await tx.fetchone(f"SELECT MAX(ts) AS t FROM health_samples WHERE device_id = ? AND ts < ?"  # noqa: S608
                           f" AND ({column} IS NULL OR {column} <= ?)", (device_id, before, above))
    last_ok = ok["t"] if ok and ok["t"] is not None else -1.0
    first = await tx.fetchone("SELECT MIN(ts) AS t FROM health_samples WHERE device_id = ? AND ts > ? AND ts < ?",
                              (device_id, last_ok, before))
    return float(first["t"]) if first and first["t"] is not None else None


@dataclass(frozen=True)
class Transition:
    """What a duration rule did at one sample: opened (lasting ``duration_s`` by then) or resolved."""

    kind: str
    ts: float
    duration_s: float = 0.0


def duration_transitions(values: Sequence[tuple[float, float | None]], *, above: float, for_s: float,
                         streak_start: float | None, is_open: bool) -> tuple[list[Transition], float | None]:
    """Walk (ts, value) in time order: open once a run above ``above`` has lasted ``for_s``; resolve at
    the first sample not above (a missing value breaks the run). Pure, so it is unit-tested alone.
    Returns the transitions and the start of the run still going at the end (None if none)."""
    events: list[Transition] = []
    start = streak_start
    for ts, value in values:
        if value is not None and value > above:
            start = ts if start is None else start
            if not is_open and ts - start >= for_s:
                events.append(Transition("open", ts, ts - start))
                is_open = True
        else:
            start = None
            if is_open:
                events.append(Transition("resolve", ts))
                is_open = False
    return events, start


async def _is_open(tx: Transaction, device_id: str, rule: str) -> bool:
    row = await tx.fetchone("SELECT id FROM alerts WHERE device_id = ? AND rule = ? AND subject = '' AND"
                            " status = 'open'", (device_id, rule))
    return row is not None


def _value(sample: HealthSample, key: str) -> float | None:
    value = sample.metrics.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


async def evaluate_health(db: Database, device_id: str, samples: Sequence[HealthSample]) -> None:
    """Check the rules against newly stored samples: disk against the newest one; memory and CPU
    over all of them in time order (a late backlog raises and resolves what happened inside it)."""
    if not samples:
        return
    rules = await settings.alert_rules(db)
    ordered = sorted(samples, key=lambda s: s.ts)
    newest = ordered[-1]
    now = time.time()
    async with db.transaction() as tx:
        disk = rules["disk_free"]
        disks = newest.metrics.get("disks") or {}
        if disk["enabled"] and isinstance(disks, dict):
            low: set[str] = set()
            for mount, free in disks.items():
                if not isinstance(free, int | float):
                    continue
                severity = "critical" if free < disk["critical_below"] else \
                    "warning" if free < disk["warning_below"] else None
                if severity:
                    low.add(mount)
                    await raise_alert(tx, device_id, "disk_free", mount, severity,
                                      f"{mount} has {free:.1f} % free", now)
            await resolve(tx, device_id, "disk_free", None, now, keep=low)
        for rule, column, metric, label in (("memory_high", "mem", "mem_percent", "memory"),
                                            ("cpu_high", "cpu", "cpu_percent", "CPU")):
            cfg = rules[rule]
            if not cfg["enabled"]:
                continue
            above, for_s = float(cfg["above"]), float(cfg["for_s"])
            events, start = duration_transitions(
                [(s.ts, _value(s, metric)) for s in ordered], above=above, for_s=for_s,
                streak_start=await _streak_start(tx, device_id, column, above, ordered[0].ts),
                is_open=await _is_open(tx, device_id, rule))
            for event in events:
                if event.kind == "open":
                    await raise_alert(tx, device_id, rule, "", "warning",
                                      f"{label} above {above:g} % for {event.duration_s:.0f} s", event.ts)
                else:
                    await resolve(tx, device_id, rule, "", event.ts)
            if start is not None and newest.ts - start >= for_s:  # still going: say for how long
                await raise_alert(tx, device_id, rule, "", "warning",
                                  f"{label} above {above:g} % for {newest.ts - start:.0f} s", newest.ts)


async def evaluate_inventory(tx: Transaction, device_id: str, now: float) -> None:
    """Battery health and pending-reboot age, from the stored summary (inside the ingest transaction)."""
    rules = await settings.alert_rules(tx)
    row = await tx.fetchone("SELECT battery_health, reboot_pending_since FROM cmdb_devices WHERE device_id = ?",
                            (device_id,))
    if row is None:
        return
    battery = rules["battery_degraded"]
    if battery["enabled"] and row["battery_health"] is not None and row["battery_health"] < battery["health_below"]:
        await raise_alert(tx, device_id, "battery_degraded", "", "warning",
                          f"battery holds {row['battery_health']:.0f} % of its design capacity", now)
    else:
        await resolve(tx, device_id, "battery_degraded", "", now)
    reboot = rules["reboot_pending"]
    since = row["reboot_pending_since"]
    if reboot["enabled"] and since is not None and now - since > reboot["for_s"]:
        await raise_alert(tx, device_id, "reboot_pending", "", "warning",
                          f"reboot pending for {(now - since) / 86400:.1f} days", now)
    elif since is None:
        await resolve(tx, device_id, "reboot_pending", "", now)


#: A device flagged online whose last contact is older than this (and than the rule's ``for_s``) counts
#: as offline too: the node holding a connection refreshes last_seen every presence sweep (30 s by
#: default), so such a flag was left by a lost write or a dead node, and the alert must not wait for it.
CONTACT_GRACE_S = 600.0


def out_of_contact(online: bool, last_seen: float | None, for_s: float, now: float) -> bool:
    """The ``agent_offline`` condition, on last contact: offline (or flagged online but silent past
    :data:`CONTACT_GRACE_S`) for longer than ``for_s``. Never-connected devices never alert."""
    if last_seen is None:
        return False
    silent = now - last_seen
    return silent > for_s and (not online or silent > CONTACT_GRACE_S)


def _offline_for(seconds: float) -> str:
    if seconds < 3600:
        return f"agent offline for {seconds / 60:.0f} min"
    return f"agent offline for {seconds / 3600:.1f} h"


async def evaluate_fleet(db: Database, now: float) -> None:
    """Periodic: agents out of contact too long, reboots pending too long."""
    rules = await settings.alert_rules(db)
    offline = rules["agent_offline"]
    rows = await db.fetchall(
        "SELECT d.id, d.online, d.last_seen, d.status, a.id AS alert_id FROM devices d LEFT JOIN alerts a"
        " ON a.device_id = d.id AND a.rule = 'agent_offline' AND a.status = 'open'"
        " WHERE (d.status <> 'revoked' AND ((d.online = 0 AND d.last_seen < ?) OR d.last_seen < ?))"
        " OR a.id IS NOT NULL",
        (now - offline["for_s"], now - max(offline["for_s"], CONTACT_GRACE_S)))
    for row in rows:
        async with db.transaction() as tx:
            stale = row["status"] != "revoked" and out_of_contact(bool(row["online"]), row["last_seen"],
                                                                   offline["for_s"], now)
            if offline["enabled"] and stale:
                await raise_alert(tx, row["id"], "agent_offline", "", "warning",
                                  _offline_for(now - row["last_seen"]), now)
            elif not stale:
                await resolve(tx, row["id"], "agent_offline", "", now)
    pending = await db.fetchall("SELECT device_id FROM cmdb_devices WHERE reboot_pending_since IS NOT NULL")
    for row in pending:
        async with db.transaction() as tx:
            await evaluate_inventory(tx, row["device_id"], now)


def describe(row: Row) -> dict[str, Any]:
    return {"id": row["id"], "device_id": row["device_id"], "rule": row["rule"], "subject": row["subject"],
            "severity": row["severity"], "status": row["status"], "message": row["message"],
            "opened_at": row["opened_at"], "updated_at": row["updated_at"], "resolved_at": row["resolved_at"]}


async def list_alerts(db: Database, *, status: str | None = None, device_id: str | None = None,
                      groups: set[str] | None = None, limit: int = 500) -> list[Row]:
    sql = "SELECT a.* FROM alerts a JOIN devices d ON d.id = a.device_id WHERE 1 = 1"
    params: list[Any] = []
    if status:
        sql += " AND a.status = ?"
        params.append(status)
    if device_id:
        sql += " AND a.device_id = ?"
        params.append(device_id)
    if groups is not None:
        if not groups:
            return []
        sql += f" AND d.group_name IN ({', '.join('?' for _ in groups)})"
        params.extend(sorted(groups))
    sql += " ORDER BY a.opened_at DESC, a.id DESC LIMIT ?"
    params.append(limit)
    return await db.fetchall(sql, params)
