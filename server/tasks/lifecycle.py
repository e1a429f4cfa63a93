"""Run state changes over time: delivery, results, schedules firing, missed windows, waves.

Run states: held (later wave / not released) → queued → sent → waiting (agent holds it for
its grant window) → succeeded | failed | timed_out | refused | cancelled, or missed (the
device was offline through its window and the task says ``missed``), or skipped (a run of a
recurring occurrence in waves not delivered within its window; not a failure).
"""

from __future__ import annotations

import json
import logging
import random
import time

from protocol.tasks import TaskResult

from .. import audit
from ..store import Database, Row
from .cron import next_occurrence
from .occurrences import fire_occurrence, in_waves, schedule_state
from .store import FINAL_STATUSES, _insert_run, _targets, device_timezone, failure_rate, get_run, get_task

log = logging.getLogger(__name__)


async def due_runs(db: Database, device_id: str, now: float) -> list[tuple[Row, Row]]:
    """(task, run) pairs ready for delivery to this device."""
    runs = await db.fetchall(
        "SELECT r.* FROM task_runs r JOIN tasks t ON t.id = r.task_id WHERE r.device_id = ? AND r.status = 'queued'"
        " AND r.not_before <= ? AND t.status = 'active' ORDER BY r.not_before", (device_id, now))
    return await _with_tasks(db, runs)


async def due_device_ids(db: Database, now: float) -> set[str]:
    """Devices with at least one run ready for delivery (one query for the whole fleet)."""
    rows = await db.fetchall("SELECT DISTINCT device_id FROM task_runs WHERE status = 'queued' AND not_before <= ?",
                             (now,))
    return {r["device_id"] for r in rows}


async def delivered_runs(db: Database, device_id: str) -> list[tuple[Row, Row]]:
    """Runs the agent got but has not answered (re-sent on reconnect; the agent de-duplicates)."""
    runs = await db.fetchall("SELECT * FROM task_runs WHERE device_id = ? AND status IN ('sent', 'waiting')"
                             " ORDER BY sent_at", (device_id,))
    return await _with_tasks(db, runs)


async def _with_tasks(db: Database, runs: list[Row]) -> list[tuple[Row, Row]]:
    pairs: list[tuple[Row, Row]] = []
    cache: dict[str, Row | None] = {}
    for run in runs:
        if run["task_id"] not in cache:
            cache[run["task_id"]] = await get_task(db, run["task_id"])
        task = cache[run["task_id"]]
        if task is not None:
            pairs.append((task, run))
    return pairs


async def mark_sent(db: Database, run_id: str, now: float) -> None:
    await db.execute("UPDATE task_runs SET status = 'sent', sent_at = ?, updated_at = ? WHERE id = ?"
                     " AND status = 'queued'", (now, now, run_id))


async def mark_waiting(db: Database, device_id: str, run_id: str, reason: str) -> None:
    await db.execute("UPDATE task_runs SET status = 'waiting', reason = ?, updated_at = ? WHERE id = ?"
                     " AND device_id = ? AND status IN ('queued', 'sent')", (reason, time.time(), run_id, device_id))


async def record_result(db: Database, device_id: str, result: TaskResult) -> Row | None:
    """Store an agent's result once (repeats are acknowledged, not re-applied) and audit it."""
    now = time.time()
    async with db.transaction() as tx:
        run = await tx.fetchone("SELECT * FROM task_runs WHERE id = ? AND device_id = ?", (result.run_id, device_id))
        if run is None:
            log.warning("result for an unknown run", extra={"device_id": device_id, "run_id": result.run_id})
            return None
        if run["status"] in FINAL_STATUSES:
            return run  # already recorded (a repeat), or cancelled/missed before delivery
        # Only a still-open run takes the result: a concurrent repeat (PostgreSQL) updates nothing.
        if await tx.execute(
            "UPDATE task_runs SET status = ?, exit_code = ?, stdout = ?, stderr = ?, truncated = ?, started_at = ?,"
            " ended_at = ?, reason = ?, details = ?, updated_at = ? WHERE id = ? AND status IN"
            " ('held', 'queued', 'sent', 'waiting')",
            (result.status, result.exit_code, result.stdout, result.stderr, int(result.truncated), result.started_at,
             result.ended_at, result.reason, json.dumps(result.details, default=str), now, result.run_id)) != 1:
            return await tx.fetchone("SELECT * FROM task_runs WHERE id = ?", (result.run_id,))
        action = "task.refused" if result.status == "refused" else "task.result"
        await audit.append_in(tx, f"device:{device_id}", action, result.run_id, {
            "task_id": run["task_id"], "status": result.status, "exit_code": result.exit_code,
            "reason": result.reason[:500], "truncated": result.truncated})
    return await get_run(db, result.run_id)


async def fire_schedules(db: Database, now: float, rng: random.Random) -> int:
    """Recurring tasks: per device, when its local-time occurrence has come, queue a run.

    One task whose stored schedule cannot be evaluated (an expression that never fires, a
    corrupt window) is logged and skipped; it must not stop every other group's schedule.
    """
    created = 0
    for task in await db.fetchall("SELECT * FROM tasks WHERE status = 'active' AND cron IS NOT NULL"):
        try:
            created += await _fire_task(db, task, now, rng)
        except Exception:
            log.exception("recurring task %s skipped this tick: its stored schedule failed", task["id"],
                          extra={"task_id": task["id"], "cron": task["cron"], "group": task["group_name"]})
    return created


async def _fire_task(db: Database, task: Row, now: float, rng: random.Random) -> int:
    if in_waves(task):
        return await fire_occurrence(db, task, now, rng)
    created = 0
    for device in await _targets(db, task["target_kind"], task["target"]):
        tz = await device_timezone(db, device["id"])
        next_due = await schedule_state(db, task, device["id"], tz)
        if next_due is None:
            continue
        if now < next_due:
            continue
        async with db.transaction() as tx:
            # Compare-and-set on next_due: a node that fires the same occurrence concurrently moves it
            # first (row lock on PostgreSQL), and this one then queues nothing.
            if await tx.execute("UPDATE task_schedule_state SET next_due = ? WHERE task_id = ? AND device_id = ?"
                                " AND next_due = ?", (next_occurrence(task["cron"], now, tz), task["id"],
                                                      device["id"], next_due)) != 1:
                continue
            open_run = await tx.fetchone(
                "SELECT id FROM task_runs WHERE task_id = ? AND device_id = ? AND status IN"
                " ('held', 'queued', 'sent', 'waiting')", (task["id"], device["id"]))
            if open_run is None:
                await _insert_run(tx, task, device["id"], device["group_name"], next_due, now, rng)
                created += 1
    return created


async def expire_undelivered(db: Database, now: float, rng: random.Random) -> int:
    """Queued runs whose window passed while the device was offline: missed, or moved on."""
    changed = 0
    rows = await db.fetchall("SELECT * FROM task_runs WHERE status = 'queued' AND deliver_by IS NOT NULL"
                             " AND deliver_by < ?", (now,))
    for run in rows:
        try:
            changed += await _expire_run(db, run, now, rng)
        except Exception:
            # One run whose task's schedule cannot be evaluated must not hold up the others.
            log.exception("undelivered run %s left as it is this tick", run["id"],
                          extra={"run_id": run["id"], "task_id": run["task_id"], "device_id": run["device_id"]})
    return changed


async def _expire_run(db: Database, run: Row, now: float, rng: random.Random) -> bool:
    task = await get_task(db, run["task_id"])
    if task is None:
        return False
    async with db.transaction() as tx:
        # Each update holds only while the run is still queued: it may have been delivered since the
        # query above, or handled by another node sharing the database.
        if task["offline_policy"] == "missed" or not task["cron"]:
            if await tx.execute("UPDATE task_runs SET status = 'missed', reason = ?, ended_at = ?, updated_at = ?"
                                " WHERE id = ? AND status = 'queued'",
                                ("device was offline during the task's window", now, now, run["id"])) != 1:
                return False
            await audit.append_in(tx, "scheduler", "task.missed", run["id"], {"task_id": task["id"],
                                                                               "device_id": run["device_id"]})
        elif run["rollout_id"]:
            # An occurrence rolling out in waves cannot wait a day for one device: this run ends
            # (not counted as a failure) and the device takes part in the next occurrence.
            if await tx.execute("UPDATE task_runs SET status = 'skipped', reason = ?, ended_at = ?, updated_at = ?"
                                " WHERE id = ? AND status = 'queued'",
                                ("not delivered within the window (device offline); it runs at the next"
                                 " occurrence", now, now, run["id"])) != 1:
                return False
            await audit.append_in(tx, "scheduler", "task.skipped", run["id"], {"task_id": task["id"],
                                                                                "device_id": run["device_id"]})
        else:
            due = next_occurrence(task["cron"], now, await device_timezone(tx, run["device_id"]))
            start = due + (rng.uniform(0, task["jitter_s"]) if task["jitter_s"] else 0.0)
            if await tx.execute("UPDATE task_runs SET due_at = ?, not_before = ?, deliver_by = ?, updated_at = ?"
                                " WHERE id = ? AND status = 'queued'",
                                (due, start, due + task["window_s"], now, run["id"])) != 1:
                return False
    return True


async def advance_rollouts(db: Database, now: float) -> list[str]:
    """Release the next wave when the current one is done, or stop when failures pass the threshold."""
    stopped: list[str] = []
    for rollout in await db.fetchall("SELECT * FROM rollouts WHERE status = 'running'"):
        try:
            if await _advance_rollout(db, rollout, now):
                stopped.append(rollout["id"])
        except Exception:
            log.exception("rollout %s not advanced this tick", rollout["id"],
                          extra={"rollout_id": rollout["id"], "task_id": rollout["task_id"]})
    return stopped


async def _advance_rollout(db: Database, rollout: Row, now: float) -> bool:
    """Move one rollout on; True when it was stopped at its failure threshold."""
    runs = await db.fetchall("SELECT * FROM task_runs WHERE rollout_id = ?", (rollout["id"],))
    released = [r for r in runs if r["wave"] <= rollout["current_wave"]]
    if any(r["status"] not in FINAL_STATUSES for r in released):
        return False
    rate = failure_rate(released)
    # Every rollout update is conditional on the state read above: when another node sharing the
    # database moved it on meanwhile, this one does nothing.
    key = (rollout["id"], rollout["current_wave"])
    async with db.transaction() as tx:
        if rate > rollout["failure_threshold"]:
            reason = (f"stopped after wave {rollout['current_wave'] + 1}: failure rate {rate:.0%} passed the"
                      f" threshold of {rollout['failure_threshold']:.0%}")
            if await tx.execute("UPDATE rollouts SET status = 'stopped', reason = ?, updated_at = ? WHERE id = ?"
                                " AND status = 'running' AND current_wave = ?",
                                (reason, now, *key)) != 1:
                return False
            await tx.execute("UPDATE task_runs SET status = 'cancelled', reason = ?, ended_at = ?, updated_at = ?"
                             " WHERE rollout_id = ? AND status = 'held'", (f"rollout {reason}", now, now,
                                                                            rollout["id"]))
            await audit.append_in(tx, "scheduler", "rollout.stop", rollout["id"],
                                  {"task_id": rollout["task_id"], "failure_rate": rate,
                                   "wave": rollout["current_wave"]})
            # A recurring schedule stops firing too, until an admin resumes it.
            if await tx.execute("UPDATE tasks SET status = 'paused', updated_at = ? WHERE id = ?"
                                " AND status = 'active' AND cron IS NOT NULL", (now, rollout["task_id"])) == 1:
                await audit.append_in(tx, "scheduler", "task.pause", rollout["task_id"],
                                      {"rollout_id": rollout["id"], "reason": reason})
            return True
        if rollout["current_wave"] + 1 >= rollout["waves"]:
            if await tx.execute("UPDATE rollouts SET status = 'completed', updated_at = ? WHERE id = ?"
                                " AND status = 'running' AND current_wave = ?",
                                (now, *key)) != 1:
                return False
            await audit.append_in(tx, "scheduler", "rollout.complete", rollout["id"],
                                  {"task_id": rollout["task_id"], "failure_rate": rate})
        else:
            wave = rollout["current_wave"] + 1
            if await tx.execute("UPDATE rollouts SET current_wave = ?, updated_at = ? WHERE id = ?"
                                " AND status = 'running' AND current_wave = ?",
                                (wave, now, *key)) != 1:
                return False
            # A released run keeps its own start (device-local due + jitter) if that is still ahead.
            await tx.execute("UPDATE task_runs SET status = 'queued', not_before = CASE WHEN not_before < ?"
                             " THEN ? ELSE not_before END, updated_at = ? WHERE rollout_id = ? AND wave = ?"
                             " AND status = 'held'", (now, now, now, rollout["id"], wave))
            await audit.append_in(tx, "scheduler", "rollout.wave", rollout["id"],
                                  {"task_id": rollout["task_id"], "wave": wave, "failure_rate": rate})
    return False
