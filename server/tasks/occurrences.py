"""Recurring group schedules in waves: each occurrence of the schedule is one rollout.

A cron task on a group with ``wave_percent`` does not fire device by device. When the earliest
device of the group comes due, one rollout is created for the occurrence: every active device
in the group gets a run at its *own* next local-time due (so device timezones still hold), the
devices due earliest go in the earliest waves, and the waves are released by
``lifecycle.advance_rollouts`` exactly as for a one-off group run. An occurrence whose failure
rate passes the threshold stops its remaining waves and pauses the schedule
(``tasks.status = 'paused'``) until an admin resumes it (:func:`server.tasks.service.resume_task`).
"""

from __future__ import annotations

import logging
import math
import random

from .. import audit
from ..store import Database, Row, Transaction
from . import repository
from .cron import next_occurrence
from .repository import Executor
from .status import RunStatus

log = logging.getLogger(__name__)


class _Raced(Exception):
    """Another server node fired this occurrence first (its state moved under us)."""


def in_waves(task: Row) -> bool:
    """Whether a task's occurrences roll out in waves (a cron schedule on a group with waves)."""
    return bool(task["cron"] and task["target_kind"] == "group" and task["wave_percent"])


async def schedule_state(db: Executor, task: Row, device_id: str, tz: str | None) -> float | None:
    """The device's next due time for a recurring task, created on first sight."""
    known = await repository.next_due(db, task["id"], device_id)
    if known is not None:
        return known
    first = next_occurrence(task["cron"], max(task["created_at"], task["run_at"] or 0.0), tz)
    # Several server nodes may share one PostgreSQL: the first insert wins, all use its row.
    return await repository.init_next_due(db, task["id"], device_id, first)


async def fire_occurrence(db: Database, task: Row, now: float, rng: random.Random) -> int:
    """Start the task's next occurrence as a rollout once its earliest device is due; runs created."""
    due: dict[str, tuple[float, str | None, Row]] = {}
    for device in await repository.active_devices(db, "group", task["target"]):
        tz = await repository.device_timezone(db, device["id"])
        next_due = await schedule_state(db, task, device["id"], tz)
        if next_due is not None:
            due[device["id"]] = (next_due, tz, device)
    if not due or now < min(d for d, _, _ in due.values()):
        return 0
    try:
        async with db.transaction() as tx:
            # Compare-and-set every device's next_due: a node firing the same occurrence concurrently
            # moves them first (row locks on PostgreSQL) and this transaction rolls back.
            for device_id, (next_due, tz, _) in due.items():
                following = next_occurrence(task["cron"], max(next_due, now), tz)
                if not await repository.advance_next_due(tx, task["id"], device_id, next_due, following):
                    raise _Raced
            running = next(iter(await repository.running_rollouts(tx, task["id"])), None)
            if running is not None:
                # The previous occurrence is still rolling out: overlapping it would defeat the waves.
                await audit.append_in(tx, "scheduler", "rollout.skip", task["id"], {
                    "running_rollout": running["id"], "devices": len(due)})
                return 0
            return await _start_rollout(tx, task, list(due.values()), now, rng)
    except _Raced:
        log.info("occurrence fired by another node", extra={"task_id": task["id"]})
        return 0


async def _start_rollout(tx: Transaction, task: Row, due: list[tuple[float, str | None, Row]], now: float,
                         rng: random.Random) -> int:
    open_ids = await repository.devices_with_open_runs(tx, task["id"])
    # Earliest-due devices first (device timezones), random order among equals.
    order = sorted((d for d in due if d[2]["id"] not in open_ids), key=lambda d: (d[0], rng.random()))
    if not order:
        return 0
    wave_size = max(1, math.ceil(len(order) * task["wave_percent"] / 100))
    waves = math.ceil(len(order) / wave_size)
    rollout_id = await repository.insert_rollout(tx, task["id"], wave_size=wave_size, waves=waves,
                                                 failure_threshold=task["failure_threshold"], now=now)
    for index, (next_due, _tz, device) in enumerate(order):
        wave = index // wave_size
        await repository.insert_run(tx, task, device["id"], device["group_name"], next_due, now, rng,
                                    rollout_id=rollout_id, wave=wave,
                                    status=RunStatus.QUEUED if wave == 0 else RunStatus.HELD)
    await audit.append_in(tx, "scheduler", "rollout.start", rollout_id, {
        "task_id": task["id"], "devices": len(order), "waves": waves, "wave_size": wave_size})
    return len(order)
