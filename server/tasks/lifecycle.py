"""Run state changes over time: delivery, results, schedules firing, missed windows, waves.

The statuses and the moves allowed between them are in :mod:`server.tasks.status`; every
change goes through :mod:`server.tasks.repository`, which refuses a move the table does not list.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from protocol.tasks import TaskResult

from .. import audit
from ..store import Database, Row
from . import repository
from .cron import next_occurrence
from .occurrences import fire_occurrence, in_waves, schedule_state
from .status import RolloutStatus, RunStatus, TaskStatus, failure_rate, is_final

log = logging.getLogger(__name__)


async def due_runs(db: Database, device_id: str, now: float) -> list[tuple[Row, Row]]:
    """(task, run) pairs ready for delivery to this device."""
    return await _with_tasks(db, await repository.due_runs(db, device_id, now))


async def due_device_ids(db: Database, now: float) -> set[str]:
    """Devices with at least one run ready for delivery (one query for the whole fleet)."""
    return await repository.devices_with_due_runs(db, now)


async def delivered_runs(db: Database, device_id: str) -> list[tuple[Row, Row]]:
    """Runs the agent got but has not answered (re-sent on reconnect; the agent de-duplicates)."""
    return await _with_tasks(db, await repository.delivered_runs(db, device_id))


async def _with_tasks(db: Database, runs: list[Row]) -> list[tuple[Row, Row]]:
    pairs: list[tuple[Row, Row]] = []
    cache: dict[str, Row | None] = {}
    for run in runs:
        if run["task_id"] not in cache:
            cache[run["task_id"]] = await repository.get_task(db, run["task_id"])
        task = cache[run["task_id"]]
        if task is not None:
            pairs.append((task, run))
    return pairs


async def mark_sent(db: Database, run_id: str, now: float) -> None:
    await repository.move_run(db, run_id, RunStatus.SENT, now, sent_at=now)


async def mark_waiting(db: Database, device_id: str, run_id: str, reason: str) -> None:
    await repository.move_run(db, run_id, RunStatus.WAITING, time.time(), device_id=device_id, reason=reason)


async def record_result(db: Database, device_id: str, result: TaskResult) -> Row | None:
    """Store an agent's result once (repeats are acknowledged, not re-applied) and audit it."""
    now = time.time()
    async with db.transaction() as tx:
        run = await repository.get_run(tx, result.run_id, device_id=device_id)
        if run is None:
            log.warning("result for an unknown run", extra={"device_id": device_id, "run_id": result.run_id})
            return None
        if is_final(run["status"]):
            return run  # already recorded (a repeat), or cancelled/missed before delivery
        status = RunStatus(result.status)
        # Only a run whose status may move to the result takes it (not a held run, never delivered);
        # a concurrent repeat (PostgreSQL) updates nothing.
        if not await repository.move_run(
                tx, result.run_id, status, now, exit_code=result.exit_code, stdout=result.stdout,
                stderr=result.stderr, truncated=int(result.truncated), started_at=result.started_at,
                ended_at=result.ended_at, reason=result.reason, details=json.dumps(result.details, default=str)):
            return await repository.get_run(tx, result.run_id)
        action = "task.refused" if status is RunStatus.REFUSED else "task.result"
        await audit.append_in(tx, f"device:{device_id}", action, result.run_id, {
            "task_id": run["task_id"], "status": result.status, "exit_code": result.exit_code,
            "reason": result.reason[:500], "truncated": result.truncated})
    return await repository.get_run(db, result.run_id)


async def fire_schedules(db: Database, now: float, rng: random.Random) -> int:
    """Recurring tasks: per device, when its local-time occurrence has come, queue a run.

    One task whose stored schedule cannot be evaluated (an expression that never fires, a
    corrupt window) is logged and skipped; it must not stop every other group's schedule.
    """
    created = 0
    for task in await repository.recurring_tasks(db):
        async with _isolated("recurring task skipped this tick: its stored schedule failed",
                             task_id=task["id"], cron=task["cron"], group=task["group_name"]):
            created += await _fire_task(db, task, now, rng)
    return created


@contextlib.asynccontextmanager
async def _isolated(what: str, **context: Any) -> AsyncIterator[None]:
    """One bad stored row (a schedule that cannot be evaluated …) is logged with its ids and
    skipped for this tick; it must not hold up every other group's tasks."""
    try:
        yield
    except Exception:
        log.exception(what, extra=context)


async def _fire_task(db: Database, task: Row, now: float, rng: random.Random) -> int:
    if in_waves(task):
        return await fire_occurrence(db, task, now, rng)
    created = 0
    for device in await repository.active_devices(db, task["target_kind"], task["target"]):
        tz = await repository.device_timezone(db, device["id"])
        next_due = await schedule_state(db, task, device["id"], tz)
        if next_due is None:
            continue
        if now < next_due:
            continue
        async with db.transaction() as tx:
            # Compare-and-set on next_due: a node that fires the same occurrence concurrently moves it
            # first (row lock on PostgreSQL), and this one then queues nothing.
            if not await repository.advance_next_due(tx, task["id"], device["id"], next_due,
                                                     next_occurrence(task["cron"], now, tz)):
                continue
            if not await repository.has_open_run(tx, task["id"], device["id"]):
                await repository.insert_run(tx, task, device["id"], device["group_name"], next_due, now, rng)
                created += 1
    return created


async def expire_undelivered(db: Database, now: float, rng: random.Random) -> int:
    """Queued runs whose window passed while the device was offline: missed, or moved on."""
    changed = 0
    for run in await repository.overdue_runs(db, now):
        async with _isolated("undelivered run left as it is this tick", run_id=run["id"], task_id=run["task_id"],
                             device_id=run["device_id"]):
            changed += await _expire_run(db, run, now, rng)
    return changed


async def _expire_run(db: Database, run: Row, now: float, rng: random.Random) -> bool:
    task = await repository.get_task(db, run["task_id"])
    if task is None:
        return False
    async with db.transaction() as tx:
        # Each update holds only while the run is still queued: it may have been delivered since the
        # query above, or handled by another node sharing the database.
        if task["offline_policy"] == "missed" or not task["cron"]:
            if not await repository.move_run(tx, run["id"], RunStatus.MISSED, now, ended_at=now,
                                             reason="device was offline during the task's window"):
                return False
            await audit.append_in(tx, "scheduler", "task.missed", run["id"], {"task_id": task["id"],
                                                                               "device_id": run["device_id"]})
        elif run["rollout_id"]:
            # An occurrence rolling out in waves cannot wait a day for one device: this run ends
            # (not counted as a failure) and the device takes part in the next occurrence.
            if not await repository.move_run(tx, run["id"], RunStatus.SKIPPED, now, ended_at=now,
                                             reason="not delivered within the window (device offline); it runs at"
                                                    " the next occurrence"):
                return False
            await audit.append_in(tx, "scheduler", "task.skipped", run["id"], {"task_id": task["id"],
                                                                                "device_id": run["device_id"]})
        else:
            due = next_occurrence(task["cron"], now, await repository.device_timezone(tx, run["device_id"]))
            start = due + (rng.uniform(0, task["jitter_s"]) if task["jitter_s"] else 0.0)
            if not await repository.reschedule_run(tx, run["id"], due, start, due + task["window_s"], now):
                return False
    return True


async def advance_rollouts(db: Database, now: float) -> list[str]:
    """Release the next wave when the current one is done, or stop when failures pass the threshold."""
    stopped: list[str] = []
    for rollout in await repository.running_rollouts(db):
        async with _isolated("rollout not advanced this tick", rollout_id=rollout["id"], task_id=rollout["task_id"]):
            if await _advance_rollout(db, rollout, now):
                stopped.append(rollout["id"])
    return stopped


async def _advance_rollout(db: Database, rollout: Row, now: float) -> bool:
    """Move one rollout on; True when it was stopped at its failure threshold."""
    runs = await repository.runs_of_rollout(db, rollout["id"])
    released = [r for r in runs if r["wave"] <= rollout["current_wave"]]
    if not all(is_final(r["status"]) for r in released):
        return False
    rate = failure_rate(r["status"] for r in released)
    # Every rollout update is conditional on the state read above: when another node sharing the
    # database moved it on meanwhile, this one does nothing.
    rollout_id, current = rollout["id"], rollout["current_wave"]
    async with db.transaction() as tx:
        if rate > rollout["failure_threshold"]:
            reason = (f"stopped after wave {rollout['current_wave'] + 1}: failure rate {rate:.0%} passed the"
                      f" threshold of {rollout['failure_threshold']:.0%}")
            if not await repository.end_rollout(tx, rollout_id, current, RolloutStatus.STOPPED, now, reason=reason):
                return False
            await repository.move_runs(tx, {RunStatus.HELD}, RunStatus.CANCELLED, now, rollout_id=rollout_id,
                                       reason=f"rollout {reason}", ended_at=now)
            await audit.append_in(tx, "scheduler", "rollout.stop", rollout["id"],
                                  {"task_id": rollout["task_id"], "failure_rate": rate,
                                   "wave": rollout["current_wave"]})
            # A recurring schedule stops firing too, until an admin resumes it.
            if await repository.move_task(tx, rollout["task_id"], {TaskStatus.ACTIVE}, TaskStatus.PAUSED, now,
                                          recurring_only=True):
                await audit.append_in(tx, "scheduler", "task.pause", rollout["task_id"],
                                      {"rollout_id": rollout["id"], "reason": reason})
            return True
        if rollout["current_wave"] + 1 >= rollout["waves"]:
            if not await repository.end_rollout(tx, rollout_id, current, RolloutStatus.COMPLETED, now):
                return False
            await audit.append_in(tx, "scheduler", "rollout.complete", rollout["id"],
                                  {"task_id": rollout["task_id"], "failure_rate": rate})
        else:
            wave = current + 1
            if not await repository.next_wave(tx, rollout_id, current, now):
                return False
            await repository.release_wave(tx, rollout_id, wave, now)
            await audit.append_in(tx, "scheduler", "rollout.wave", rollout["id"],
                                  {"task_id": rollout["task_id"], "wave": wave, "failure_rate": rate})
    return False
