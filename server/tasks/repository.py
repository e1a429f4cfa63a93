"""All SQL for tasks, their runs, rollouts and schedule state (portable SQL, ``?`` placeholders).

The service, the scheduler, the artifact sweep and the API read and write these tables only
through the functions here. A run's status changes only through :func:`move_run`,
:func:`move_runs` and :func:`release_wave`, whose WHERE clauses come from
:data:`server.tasks.status.TRANSITIONS`: an update that would make an illegal move changes no
row, also when another server node sharing the database moved the run first.

Statuses are bound as parameters, never spliced into SQL; only fixed fragments (column names
from :data:`RUN_COLUMNS`, placeholder lists) are joined into statements.
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Collection, Iterable
from typing import Any

from ..store import Database, Row, Transaction
from .spec import TaskSpec
from .status import INITIAL, OPEN, RolloutStatus, RunStatus, TaskStatus, check, check_task, sources

Executor = Database | Transaction

#: Most tasks one listing page returns.
MAX_PAGE = 500
#: Columns a status move may set besides ``status`` and ``updated_at``.
RUN_COLUMNS = frozenset({"sent_at", "started_at", "ended_at", "exit_code", "stdout", "stderr", "truncated",
                         "reason", "details"})


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _marks(values: Collection[Any]) -> str:
    return ", ".join("?" * len(values))


def _values(statuses: Iterable[RunStatus]) -> list[str]:
    return sorted(s.value for s in statuses)


# --- devices ---------------------------------------------------------------------------------


async def active_devices(db: Executor, kind: str, target: str) -> list[Row]:
    """Active devices (id, group_name) of a ``device`` or ``group`` target."""
    if kind == "device":
        return await db.fetchall("SELECT id, group_name FROM devices WHERE id = ? AND status = 'active'", (target,))
    return await db.fetchall("SELECT id, group_name FROM devices WHERE group_name = ? AND status = 'active'"
                             " ORDER BY id", (target,))


async def device_group(db: Executor, device_id: str) -> str | None:
    row = await db.fetchone("SELECT group_name FROM devices WHERE id = ?", (device_id,))
    return None if row is None else str(row["group_name"])


async def device_timezone(db: Executor, device_id: str) -> str | None:
    """The device's IANA zone from its inventory (``os.timezone``), if reported."""
    row = await db.fetchone("SELECT data FROM inventory_sections WHERE device_id = ? AND section = 'os'",
                            (device_id,))
    if row is None:
        return None
    try:
        tz = json.loads(row["data"]).get("timezone")
    except (ValueError, AttributeError):
        return None
    if isinstance(tz, dict):
        tz = tz.get("name")
    return tz if isinstance(tz, str) and tz else None


# --- tasks -----------------------------------------------------------------------------------


async def get_task(db: Executor, task_id: str) -> Row | None:
    return await db.fetchone("SELECT * FROM tasks WHERE id = ?", (task_id,))


async def insert_task(tx: Transaction, spec: TaskSpec, *, task_id: str, group: str,
                      status: TaskStatus, device_count: int, actor: str, now: float) -> Row:
    kind, target = spec.target
    await tx.execute(
        "INSERT INTO tasks (id, action, params, script, document_id, technician, role, timeout_s, output_cap,"
        " target_kind, target, group_name, cron, run_at, window_s, jitter_s, offline_policy, wave_percent,"
        " failure_threshold, status, device_count, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?,"
        " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (task_id, spec.action, json.dumps(spec.params), spec.script, spec.document_id, spec.technician, spec.role,
         spec.timeout_s, spec.output_cap, kind, target, group, spec.cron, spec.run_at, spec.window_s, spec.jitter_s,
         spec.offline_policy, spec.wave_percent, spec.failure_threshold, status.value, device_count, actor, now,
         now))
    row = await get_task(tx, task_id)
    assert row is not None
    return row


async def move_task(db: Executor, task_id: str, from_: Collection[TaskStatus], to: TaskStatus, now: float, *,
                    approved_by: str | None = None, recurring_only: bool = False) -> bool:
    """Set a task's status if it is still in one of ``from_``; False when it was not (or raced)."""
    for old in from_:
        check_task(old, to)
    sql = f"UPDATE tasks SET status = ?, updated_at = ?{', approved_by = ?' if approved_by else ''}"  # noqa: S608
    args: list[Any] = [to.value, now, *([approved_by] if approved_by else [])]
    sql += f" WHERE id = ? AND status IN ({_marks(from_)})" + (" AND cron IS NOT NULL" if recurring_only else "")
    return await db.execute(sql, (*args, task_id, *sorted(s.value for s in from_))) == 1


async def recurring_tasks(db: Executor) -> list[Row]:
    """Active tasks with a cron schedule."""
    return await db.fetchall("SELECT * FROM tasks WHERE status = ? AND cron IS NOT NULL", (TaskStatus.ACTIVE.value,))


async def list_tasks(db: Executor, *, groups: set[str] | None = None, limit: int = 200,
                     before: tuple[float, str] | None = None) -> list[Row]:
    """Newest tasks first, only in ``groups`` (None = all), filtered in SQL so a page is full.

    Paging is by key: ``before`` is the (created_at, id) of the last row of the previous page
    (see :func:`server.tasks.views.page_cursor`), so rows inserted meanwhile neither repeat nor vanish.
    """
    if groups is not None and not groups:
        return []
    where: list[str] = []
    args: list[Any] = []
    if groups is not None:
        names = sorted(groups)
        where.append(f"group_name IN ({_marks(names)})")
        args.extend(names)
    if before is not None:
        where.append("(created_at < ? OR (created_at = ? AND id < ?))")
        args.extend((before[0], before[0], before[1]))
    sql = "SELECT * FROM tasks" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608
    args.append(max(1, min(limit, MAX_PAGE)))
    return await db.fetchall(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", tuple(args))


async def schedule_summary(db: Executor, tasks: list[Row]) -> dict[str, dict[str, Any]]:
    """Per task id: ``next_due`` and ``run_counts`` (runs by status), in three queries for the list.

    ``next_due`` is the earliest next occurrence across the devices of a recurring task (None until
    the scheduler has first looked at it), or the earliest due time among a one-off task's open runs
    (None once all finished). Only active tasks have one.
    """
    summary: dict[str, dict[str, Any]] = {t["id"]: {"next_due": None, "run_counts": {}} for t in tasks}
    if not tasks:
        return summary
    ids = [t["id"] for t in tasks]
    marks = _marks(ids)
    cron_ids = {t["id"] for t in tasks if t["cron"] and t["status"] == TaskStatus.ACTIVE}
    once_ids = {t["id"] for t in tasks if not t["cron"] and t["status"] == TaskStatus.ACTIVE}
    for row in await db.fetchall(f"SELECT task_id, MIN(next_due) AS due FROM task_schedule_state"  # noqa: S608
                                 f" WHERE task_id IN ({marks}) GROUP BY task_id", ids):
        if row["task_id"] in cron_ids:
            summary[row["task_id"]]["next_due"] = row["due"]
    open_values = _values(OPEN)
    for row in await db.fetchall(f"SELECT task_id, MIN(due_at) AS due FROM task_runs WHERE task_id IN ({marks})"  # noqa: S608
                                 f" AND status IN ({_marks(open_values)}) GROUP BY task_id", [*ids, *open_values]):
        if row["task_id"] in once_ids:
            summary[row["task_id"]]["next_due"] = row["due"]
    for row in await db.fetchall(f"SELECT task_id, status, COUNT(*) AS n FROM task_runs"  # noqa: S608
                                 f" WHERE task_id IN ({marks}) GROUP BY task_id, status", ids):
        summary[row["task_id"]]["run_counts"][row["status"]] = int(row["n"])
    return summary


# --- runs ------------------------------------------------------------------------------------


async def insert_run(tx: Executor, task: Row, device_id: str, group: str, due: float, now: float,
                     rng: random.Random, *, rollout_id: str | None = None, wave: int = 0,
                     status: RunStatus = RunStatus.QUEUED) -> str:
    """A new run of ``task`` on one device, due at ``due`` plus the task's jitter."""
    if status not in INITIAL:
        raise ValueError(f"a task run cannot start {status}")
    run_id = new_id("r")
    not_before = due + (rng.uniform(0, task["jitter_s"]) if task["jitter_s"] else 0.0)
    deliver_by = due + task["window_s"] if (task["offline_policy"] == "missed" or task["cron"]) else None
    await tx.execute(
        "INSERT INTO task_runs (id, task_id, device_id, group_name, rollout_id, wave, status, due_at, not_before,"
        " deliver_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, task["id"], device_id, group, rollout_id, wave, status.value, due, not_before, deliver_by, now,
         now))
    return run_id


def _set_clause(columns: dict[str, Any]) -> tuple[str, list[Any]]:
    unknown = set(columns) - RUN_COLUMNS
    if unknown:
        raise ValueError(f"not a settable task_runs column: {sorted(unknown)}")
    names = sorted(columns)
    return "".join(f", {name} = ?" for name in names), [columns[name] for name in names]


async def move_run(db: Executor, run_id: str, to: RunStatus, now: float, *, device_id: str | None = None,
                   **columns: Any) -> bool:
    """Move one run to ``to`` if its current status allows it (see the module docstring)."""
    allowed = _values(sources(to))
    assignments, values = _set_clause(columns)
    sql = (f"UPDATE task_runs SET status = ?, updated_at = ?{assignments} WHERE id = ?"  # noqa: S608
           + (" AND device_id = ?" if device_id is not None else "") + f" AND status IN ({_marks(allowed)})")
    params = [to.value, now, *values, run_id, *([device_id] if device_id is not None else []), *allowed]
    return await db.execute(sql, params) == 1


async def move_runs(db: Executor, from_: Collection[RunStatus], to: RunStatus, now: float, *,
                    task_id: str | None = None, rollout_id: str | None = None, **columns: Any) -> int:
    """Move every run of a task (or rollout) that is in one of ``from_`` to ``to``; how many moved."""
    for old in from_:
        check(old, to)
    if (task_id is None) == (rollout_id is None):
        raise ValueError("move_runs needs exactly one of task_id, rollout_id")
    assignments, values = _set_clause(columns)
    owner = "task_id" if task_id is not None else "rollout_id"
    old_values = _values(from_)
    sql = (f"UPDATE task_runs SET status = ?, updated_at = ?{assignments} WHERE {owner} = ?"  # noqa: S608
           f" AND status IN ({_marks(old_values)})")
    return await db.execute(sql, [to.value, now, *values, task_id or rollout_id, *old_values])


async def release_wave(db: Executor, rollout_id: str, wave: int, now: float) -> int:
    """Held runs of a wave become queued; each keeps its own start (device-local due + jitter) if still ahead."""
    check(RunStatus.HELD, RunStatus.QUEUED)
    return await db.execute(
        "UPDATE task_runs SET status = ?, not_before = CASE WHEN not_before < ? THEN ? ELSE not_before END,"
        " updated_at = ? WHERE rollout_id = ? AND wave = ? AND status = ?",
        (RunStatus.QUEUED.value, now, now, now, rollout_id, wave, RunStatus.HELD.value))


async def reschedule_run(db: Executor, run_id: str, due: float, not_before: float, deliver_by: float,
                         now: float) -> bool:
    """A queued run whose window passed moves to the next window (its status stays queued)."""
    return await db.execute("UPDATE task_runs SET due_at = ?, not_before = ?, deliver_by = ?, updated_at = ?"
                            " WHERE id = ? AND status = ?",
                            (due, not_before, deliver_by, now, run_id, RunStatus.QUEUED.value)) == 1


async def get_run(db: Executor, run_id: str, *, device_id: str | None = None) -> Row | None:
    if device_id is None:
        return await db.fetchone("SELECT * FROM task_runs WHERE id = ?", (run_id,))
    return await db.fetchone("SELECT * FROM task_runs WHERE id = ? AND device_id = ?", (run_id, device_id))


async def runs_of_task(db: Executor, task_id: str) -> list[Row]:
    return await db.fetchall("SELECT * FROM task_runs WHERE task_id = ? ORDER BY wave, created_at, id", (task_id,))


async def runs_of_device(db: Executor, device_id: str, *, limit: int = 100) -> list[Row]:
    return await db.fetchall("SELECT r.*, t.action AS action FROM task_runs r JOIN tasks t ON t.id = r.task_id"
                             " WHERE r.device_id = ? ORDER BY r.created_at DESC LIMIT ?", (device_id, limit))


async def runs_of_rollout(db: Executor, rollout_id: str) -> list[Row]:
    return await db.fetchall("SELECT * FROM task_runs WHERE rollout_id = ? ORDER BY wave, id", (rollout_id,))


async def due_runs(db: Executor, device_id: str, now: float) -> list[Row]:
    """Queued runs of active tasks whose start has come, for one device."""
    return await db.fetchall(
        "SELECT r.* FROM task_runs r JOIN tasks t ON t.id = r.task_id WHERE r.device_id = ? AND r.status = ?"
        " AND r.not_before <= ? AND t.status = ? ORDER BY r.not_before",
        (device_id, RunStatus.QUEUED.value, now, TaskStatus.ACTIVE.value))


async def devices_with_due_runs(db: Executor, now: float) -> set[str]:
    """Devices with at least one run ready for delivery (one query for the whole fleet)."""
    rows = await db.fetchall("SELECT DISTINCT device_id FROM task_runs WHERE status = ? AND not_before <= ?",
                             (RunStatus.QUEUED.value, now))
    return {r["device_id"] for r in rows}


async def runs_starting(db: Executor, until: float, now: float, *, grace_s: float) -> list[Row]:
    """Queued runs of active tasks that start by ``until`` and can still be delivered: their window is open,
    or (no window) they became due less than ``grace_s`` ago. What the waker wakes devices for."""
    return await db.fetchall(
        "SELECT r.id, r.task_id, r.device_id, r.not_before FROM task_runs r JOIN tasks t ON t.id = r.task_id"
        " WHERE r.status = ? AND t.status = ? AND r.not_before <= ?"
        " AND (r.deliver_by > ? OR (r.deliver_by IS NULL AND r.not_before > ?)) ORDER BY r.not_before",
        (RunStatus.QUEUED.value, TaskStatus.ACTIVE.value, until, now, now - grace_s))


async def delivered_runs(db: Executor, device_id: str) -> list[Row]:
    """Runs the agent got but has not answered (sent or waiting), oldest delivery first."""
    delivered = _values({RunStatus.SENT, RunStatus.WAITING})
    return await db.fetchall(f"SELECT * FROM task_runs WHERE device_id = ? AND status IN ({_marks(delivered)})"  # noqa: S608
                             " ORDER BY sent_at", (device_id, *delivered))


async def overdue_runs(db: Executor, now: float) -> list[Row]:
    """Queued runs whose delivery window has passed."""
    return await db.fetchall("SELECT * FROM task_runs WHERE status = ? AND deliver_by IS NOT NULL"
                             " AND deliver_by < ?", (RunStatus.QUEUED.value, now))


async def devices_with_open_runs(db: Executor, task_id: str) -> set[str]:
    open_values = _values(OPEN)
    rows = await db.fetchall(f"SELECT device_id FROM task_runs WHERE task_id = ?"  # noqa: S608
                             f" AND status IN ({_marks(open_values)})", (task_id, *open_values))
    return {r["device_id"] for r in rows}


async def has_open_run(db: Executor, task_id: str, device_id: str) -> bool:
    open_values = _values(OPEN)
    row = await db.fetchone(f"SELECT id FROM task_runs WHERE task_id = ? AND device_id = ?"  # noqa: S608
                            f" AND status IN ({_marks(open_values)})", (task_id, device_id, *open_values))
    return row is not None


async def run_with_action(db: Executor, run_id: str, device_id: str) -> Row | None:
    """A device's run with its task's action (what an artifact upload is checked against)."""
    return await db.fetchone("SELECT r.id, r.details, t.action FROM task_runs r JOIN tasks t ON t.id = r.task_id"
                             " WHERE r.id = ? AND r.device_id = ?", (run_id, device_id))


async def runs_with_stored_artifacts(db: Executor) -> list[Row]:
    """Runs whose details may record a stored artifact (a pre-filter on the JSON text; callers check)."""
    return await db.fetchall("SELECT id, device_id, details FROM task_runs WHERE details LIKE ?",
                             ('%"stored": true%',))


async def set_details(db: Executor, run_id: str, details: str) -> None:
    await db.execute("UPDATE task_runs SET details = ? WHERE id = ?", (details, run_id))


async def swap_details(db: Executor, run_id: str, expected: str, details: str, now: float) -> bool:
    """Replace a run's details only if they still read ``expected`` (another node may have changed them)."""
    return await db.execute("UPDATE task_runs SET details = ?, updated_at = ? WHERE id = ? AND details = ?",
                            (details, now, run_id, expected)) == 1


# --- rollouts --------------------------------------------------------------------------------


async def insert_rollout(tx: Executor, task_id: str, *, wave_size: int, waves: int, failure_threshold: float,
                         now: float) -> str:
    rollout_id = new_id("ro")
    await tx.execute(
        "INSERT INTO rollouts (id, task_id, wave_size, waves, current_wave, failure_threshold, status,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
        (rollout_id, task_id, wave_size, waves, failure_threshold, RolloutStatus.RUNNING.value, now, now))
    return rollout_id


async def get_rollout(db: Executor, rollout_id: str) -> Row | None:
    return await db.fetchone("SELECT * FROM rollouts WHERE id = ?", (rollout_id,))


async def rollouts_of_task(db: Executor, task_id: str) -> list[Row]:
    return await db.fetchall("SELECT * FROM rollouts WHERE task_id = ? ORDER BY created_at", (task_id,))


async def running_rollouts(db: Executor, task_id: str | None = None) -> list[Row]:
    if task_id is None:
        return await db.fetchall("SELECT * FROM rollouts WHERE status = ?", (RolloutStatus.RUNNING.value,))
    return await db.fetchall("SELECT * FROM rollouts WHERE task_id = ? AND status = ?",
                             (task_id, RolloutStatus.RUNNING.value))


async def cancel_rollouts(db: Executor, task_id: str, reason: str, now: float) -> int:
    return await db.execute("UPDATE rollouts SET status = ?, reason = ?, updated_at = ? WHERE task_id = ?"
                            " AND status = ?", (RolloutStatus.CANCELLED.value, reason, now, task_id,
                                                RolloutStatus.RUNNING.value))


async def end_rollout(db: Executor, rollout_id: str, current_wave: int, to: RolloutStatus, now: float, *,
                      reason: str = "") -> bool:
    """Stop or complete a running rollout still at ``current_wave`` (False: another node moved it on)."""
    if to not in (RolloutStatus.STOPPED, RolloutStatus.COMPLETED):
        raise ValueError(f"a rollout does not end {to}")
    return await db.execute("UPDATE rollouts SET status = ?, reason = ?, updated_at = ? WHERE id = ?"
                            " AND status = ? AND current_wave = ?",
                            (to.value, reason, now, rollout_id, RolloutStatus.RUNNING.value, current_wave)) == 1


async def next_wave(db: Executor, rollout_id: str, current_wave: int, now: float) -> bool:
    """Advance a running rollout from ``current_wave`` to the next (False: another node did)."""
    return await db.execute("UPDATE rollouts SET current_wave = ?, updated_at = ? WHERE id = ? AND status = ?"
                            " AND current_wave = ?",
                            (current_wave + 1, now, rollout_id, RolloutStatus.RUNNING.value, current_wave)) == 1


# --- schedule state (recurring tasks, per device) ----------------------------------------------


async def next_due(db: Executor, task_id: str, device_id: str) -> float | None:
    row = await db.fetchone("SELECT next_due FROM task_schedule_state WHERE task_id = ? AND device_id = ?",
                            (task_id, device_id))
    return None if row is None else float(row["next_due"])


async def init_next_due(db: Executor, task_id: str, device_id: str, first: float) -> float | None:
    """The device's next due time, created as ``first`` unless a row exists (the first insert wins)."""
    await db.execute("INSERT INTO task_schedule_state (task_id, device_id, next_due) VALUES (?, ?, ?)"
                     " ON CONFLICT (task_id, device_id) DO NOTHING", (task_id, device_id, first))
    return await next_due(db, task_id, device_id)


async def advance_next_due(db: Executor, task_id: str, device_id: str, expected: float, following: float) -> bool:
    """Compare-and-set: move next_due from ``expected`` to ``following``; False when another node did first."""
    return await db.execute("UPDATE task_schedule_state SET next_due = ? WHERE task_id = ? AND device_id = ?"
                            " AND next_due = ?", (following, task_id, device_id, expected)) == 1


async def scheduled_devices(db: Executor, task_id: str) -> list[str]:
    rows = await db.fetchall("SELECT device_id FROM task_schedule_state WHERE task_id = ?", (task_id,))
    return [r["device_id"] for r in rows]


async def set_next_due(db: Executor, task_id: str, device_id: str, when: float) -> None:
    await db.execute("UPDATE task_schedule_state SET next_due = ? WHERE task_id = ? AND device_id = ?",
                     (when, task_id, device_id))
