"""Task definitions, per-device runs and rollouts in the database (portable SQL).

A *task* is what an admin asked for (action, params, grant, target, schedule); a *run* is
one execution on one device; a *rollout* releases a group run wave by wave. Backing
functions for ``helpline admin task …`` and the REST API live here, so both behave alike.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from protocol.grants import SignedGrant
from protocol.tasks import ACTIONS, DEFAULT_OUTPUT_CAP, DEFAULT_TIMEOUT_S, MAX_OUTPUT_CAP, MAX_TIMEOUT_S, TaskRun

from .. import audit, events
from ..store import Database, Row, Transaction
from .cron import Cron, CronError, next_occurrence

#: Events for the live server(s): a task changed (wake the scheduler) or was cancelled.
TASK_CHANGED = "task.changed"
TASK_CANCELLED = "task.cancelled"

OPEN_STATUSES = ("held", "queued", "sent", "waiting")
FAILURE_STATUSES = frozenset({"failed", "timed_out", "refused", "missed"})
FINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "refused", "cancelled", "missed", "skipped"})
#: Final statuses that count neither as success nor as failure in a rollout's failure rate.
NEUTRAL_STATUSES = frozenset({"cancelled", "skipped"})
DEFAULT_APPROVAL_THRESHOLD = 25

Executor = Database | Transaction


class TaskError(ValueError):
    """A task request that cannot be accepted; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class TaskSpec:
    action: str
    grant_id: str
    technician: str
    role: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    script: str | None = None
    script_signature: str | None = None
    device: str | None = None
    group: str | None = None
    #: Five-field cron (device-local time) for a recurring task; None = one-off.
    cron: str | None = None
    #: One-off start time (epoch s); None = now.
    run_at: float | None = None
    #: How long after the due time a run may still be delivered.
    window_s: float = 3600.0
    #: Random delay (0..jitter_s) added to each device's start, inside the window.
    jitter_s: float = 0.0
    #: A device offline for its whole window: run at its next window, or mark the run missed.
    offline_policy: Literal["next", "missed"] = "next"
    wave_percent: int | None = None
    failure_threshold: float = 0.2
    timeout_s: float = DEFAULT_TIMEOUT_S
    output_cap: int = DEFAULT_OUTPUT_CAP
    #: The signed grant (else looked up in the grant store by ``grant_id``).
    grant: SignedGrant | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _validate(spec: TaskSpec) -> None:
    if spec.action not in ACTIONS:
        raise TaskError("unknown_action", f"unknown action {spec.action!r}; known: {', '.join(ACTIONS)}")
    if (spec.device is None) == (spec.group is None):
        raise TaskError("bad_target", "give exactly one target: a device or a group")
    if spec.action == "script" and not spec.script:
        raise TaskError("bad_params", "the script action needs a script")
    if spec.action != "script" and spec.script:
        raise TaskError("bad_params", f"action {spec.action!r} does not take a script")
    if spec.cron is not None:
        try:
            Cron.parse(spec.cron)
        except CronError as exc:
            raise TaskError("bad_schedule", str(exc)) from exc
    if not 0 < spec.timeout_s <= MAX_TIMEOUT_S:
        raise TaskError("bad_timeout", f"timeout must be within 0..{MAX_TIMEOUT_S} s")
    if not 0 <= spec.output_cap <= MAX_OUTPUT_CAP:
        raise TaskError("bad_output_cap", f"output cap must be within 0..{MAX_OUTPUT_CAP} bytes")
    if spec.jitter_s < 0 or spec.window_s <= 0 or spec.jitter_s > spec.window_s:
        raise TaskError("bad_window", "need window > 0 and 0 <= jitter <= window")
    if spec.wave_percent is not None and not 1 <= spec.wave_percent <= 100:
        raise TaskError("bad_waves", "wave percent must be within 1..100")
    if not 0 <= spec.failure_threshold <= 1:
        raise TaskError("bad_threshold", "failure threshold is a fraction within 0..1")


async def _resolve_grant(tx: Transaction, spec: TaskSpec) -> SignedGrant:
    if spec.grant is not None:
        return spec.grant
    from server.grants import store as grant_store

    row = await grant_store.get(tx, spec.grant_id)
    signed = grant_store.signed_of(row) if row else None
    if signed is None:
        raise TaskError("unknown_grant", f"no active signed grant {spec.grant_id!r}")
    return signed


async def _targets(tx: Executor, kind: str, target: str) -> list[Row]:
    if kind == "device":
        return await tx.fetchall("SELECT id, group_name FROM devices WHERE id = ? AND status = 'active'", (target,))
    return await tx.fetchall("SELECT id, group_name FROM devices WHERE group_name = ? AND status = 'active'"
                             " ORDER BY id", (target,))


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


async def create_task(db: Database, spec: TaskSpec, *, actor: str,
                      approval_threshold: int = DEFAULT_APPROVAL_THRESHOLD, now: float | None = None,
                      rng: random.Random | None = None) -> Row:
    """Validate, store, audit; runs start at once unless the fleet size needs a second admin."""
    _validate(spec)
    now = time.time() if now is None else now
    kind, target = ("device", spec.device) if spec.device is not None else ("group", spec.group)
    assert target is not None
    async with db.transaction() as tx:
        devices = await _targets(tx, kind, target)
        if not devices:
            raise TaskError("no_devices", f"no active device in {kind} {target!r}")
        signed = await _resolve_grant(tx, spec)
        group = devices[0]["group_name"] if kind == "device" else target
        status = "pending_approval" if len(devices) > approval_threshold else "active"
        task_id = new_id("t")
        await tx.execute(
            "INSERT INTO tasks (id, action, params, script, script_signature, grant_id, grant_document,"
            " grant_signature, technician, role, timeout_s, output_cap, target_kind, target, group_name, cron,"
            " run_at, window_s, jitter_s, offline_policy, wave_percent, failure_threshold, status, device_count,"
            " created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?, ?, ?, ?, ?, ?)",
            (task_id, spec.action, json.dumps(spec.params), spec.script, spec.script_signature, spec.grant_id,
             signed.document, signed.signature, spec.technician, spec.role, spec.timeout_s, spec.output_cap, kind,
             target, group, spec.cron, spec.run_at, spec.window_s, spec.jitter_s, spec.offline_policy,
             spec.wave_percent, spec.failure_threshold, status, len(devices), actor, now, now))
        task = await get_task(tx, task_id)
        assert task is not None
        if status == "active":
            await _materialize(tx, task, devices, now, rng or random.Random())
        await audit.append_in(tx, actor, "task.create", task_id, {
            "action": spec.action, "target": f"{kind}:{target}", "devices": len(devices), "grant_id": spec.grant_id,
            "cron": spec.cron, "status": status, "script_sha256": _script_hash(spec.script),
            "params": spec.params})
        await events.publish_in(tx, TASK_CHANGED, task_id)
    result = await get_task(db, task_id)
    assert result is not None
    return result


def _script_hash(script: str | None) -> str | None:
    from protocol.tasks import script_sha256

    return script_sha256(script) if script else None


async def _materialize(tx: Transaction, task: Row, devices: list[Row], now: float, rng: random.Random) -> None:
    """Create the runs of a one-off task (recurring ones get runs when they fire)."""
    if task["cron"]:
        return
    due = task["run_at"] if task["run_at"] is not None else now
    rollout_id, wave_size = None, len(devices)
    if task["wave_percent"] and len(devices) > 1:
        wave_size = max(1, math.ceil(len(devices) * task["wave_percent"] / 100))
        waves = math.ceil(len(devices) / wave_size)
        rollout_id = new_id("ro")
        await tx.execute(
            "INSERT INTO rollouts (id, task_id, wave_size, waves, current_wave, failure_threshold, status,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, 'running', ?, ?)",
            (rollout_id, task["id"], wave_size, waves, task["failure_threshold"], now, now))
    order = list(devices)
    rng.shuffle(order)
    for index, device in enumerate(order):
        wave = index // wave_size if rollout_id else 0
        await _insert_run(tx, task, device["id"], device["group_name"], due, now, rng, rollout_id=rollout_id,
                          wave=wave, status="queued" if wave == 0 else "held")


async def _insert_run(tx: Transaction, task: Row, device_id: str, group: str, due: float, now: float,
                      rng: random.Random, *, rollout_id: str | None = None, wave: int = 0,
                      status: str = "queued") -> str:
    run_id = new_id("r")
    not_before = due + (rng.uniform(0, task["jitter_s"]) if task["jitter_s"] else 0.0)
    deliver_by = due + task["window_s"] if (task["offline_policy"] == "missed" or task["cron"]) else None
    await tx.execute(
        "INSERT INTO task_runs (id, task_id, device_id, group_name, rollout_id, wave, status, due_at, not_before,"
        " deliver_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, task["id"], device_id, group, rollout_id, wave, status, due, not_before, deliver_by, now, now))
    return run_id


# --- approval, cancel, resume --------------------------------------------------------------


async def approve_task(db: Database, task_id: str, *, approver: str, now: float | None = None,
                       rng: random.Random | None = None) -> Row:
    """Second-admin approval of a large run: the approver must not be the creator."""
    now = time.time() if now is None else now
    async with db.transaction() as tx:
        task = await get_task(tx, task_id)
        if task is None:
            raise TaskError("not_found", f"no task {task_id!r}")
        if task["status"] != "pending_approval":
            raise TaskError("not_pending", f"task {task_id} is {task['status']}, not waiting for approval")
        if approver == task["created_by"]:
            raise TaskError("same_admin", "a second admin must approve: the creator cannot approve their own task")
        # Conditional: of two concurrent approvals (PostgreSQL runs both at once) only one materializes runs.
        if await tx.execute("UPDATE tasks SET status = 'active', approved_by = ?, updated_at = ? WHERE id = ?"
                            " AND status = 'pending_approval'", (approver, now, task_id)) != 1:
            raise TaskError("not_pending", f"task {task_id} was approved or cancelled meanwhile")
        fresh = await get_task(tx, task_id)
        assert fresh is not None
        await _materialize(tx, fresh, await _targets(tx, task["target_kind"], task["target"]), now,
                           rng or random.Random())
        await audit.append_in(tx, approver, "task.approve", task_id, {"created_by": task["created_by"],
                                                                     "devices": task["device_count"]})
        await events.publish_in(tx, TASK_CHANGED, task_id)
    result = await get_task(db, task_id)
    assert result is not None
    return result


async def cancel_task(db: Database, task_id: str, *, actor: str, now: float | None = None) -> int:
    """Stop a task: runs not yet delivered are cancelled here, delivered ones by the agent."""
    now = time.time() if now is None else now
    async with db.transaction() as tx:
        task = await get_task(tx, task_id)
        if task is None:
            raise TaskError("not_found", f"no task {task_id!r}")
        if task["status"] == "cancelled":
            return 0
        if await tx.execute("UPDATE tasks SET status = 'cancelled', updated_at = ? WHERE id = ?"
                            " AND status <> 'cancelled'", (now, task_id)) != 1:
            return 0  # cancelled meanwhile by a concurrent request
        changed = await tx.execute(
            "UPDATE task_runs SET status = 'cancelled', reason = ?, ended_at = ?, updated_at = ?"
            " WHERE task_id = ? AND status IN ('held', 'queued')", (f"cancelled by {actor}", now, now, task_id))
        await tx.execute("UPDATE rollouts SET status = 'cancelled', reason = ?, updated_at = ?"
                         " WHERE task_id = ? AND status = 'running'", (f"cancelled by {actor}", now, task_id))
        await audit.append_in(tx, actor, "task.cancel", task_id, {"runs_cancelled": changed})
        await events.publish_in(tx, TASK_CANCELLED, task_id)
    return changed


async def resume_task(db: Database, task_id: str, *, actor: str, now: float | None = None) -> Row:
    """Resume a schedule paused by a stopped occurrence; it fires next at each device's next occurrence."""
    now = time.time() if now is None else now
    async with db.transaction() as tx:
        task = await get_task(tx, task_id)
        if task is None:
            raise TaskError("not_found", f"no task {task_id!r}")
        if await tx.execute("UPDATE tasks SET status = 'active', updated_at = ? WHERE id = ? AND status = 'paused'",
                            (now, task_id)) != 1:
            raise TaskError("not_paused", f"task {task_id} is {task['status']}, not paused")
        # Occurrences that fell due while paused are not caught up: each device starts afresh after now.
        for state in await tx.fetchall("SELECT device_id FROM task_schedule_state WHERE task_id = ?", (task_id,)):
            following = next_occurrence(task["cron"], now, await device_timezone(tx, state["device_id"]))
            await tx.execute("UPDATE task_schedule_state SET next_due = ? WHERE task_id = ? AND device_id = ?",
                             (following, task_id, state["device_id"]))
        await audit.append_in(tx, actor, "task.resume", task_id, {"cron": task["cron"]})
        await events.publish_in(tx, TASK_CHANGED, task_id)
    result = await get_task(db, task_id)
    assert result is not None
    return result


# --- queries -------------------------------------------------------------------------------


async def get_task(db: Executor, task_id: str) -> Row | None:
    return await db.fetchone("SELECT * FROM tasks WHERE id = ?", (task_id,))


#: Most tasks one listing page returns.
MAX_PAGE = 500


async def list_tasks(db: Executor, *, groups: set[str] | None = None, limit: int = 200,
                     before: tuple[float, str] | None = None) -> list[Row]:
    """Newest tasks first, only in ``groups`` (None = all), filtered in SQL so a page is full.

    Paging is by key: ``before`` is the (created_at, id) of the last row of the previous page
    (see :func:`page_cursor`), so rows inserted meanwhile neither repeat nor vanish.
    """
    if groups is not None and not groups:
        return []
    where: list[str] = []
    args: list[Any] = []
    if groups is not None:
        names = sorted(groups)
        where.append(f"group_name IN ({', '.join('?' * len(names))})")
        args.extend(names)
    if before is not None:
        where.append("(created_at < ? OR (created_at = ? AND id < ?))")
        args.extend((before[0], before[0], before[1]))
    # Only fixed fragments and placeholders are joined; every value is a bound parameter.
    sql = "SELECT * FROM tasks" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608
    args.append(max(1, min(limit, MAX_PAGE)))
    return await db.fetchall(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", tuple(args))


def page_cursor(row: Row) -> str:
    """Opaque cursor naming a row's place in the listing (``created_at`` round-trips via repr)."""
    return f"{row['created_at']!r}~{row['id']}"


def parse_cursor(text: str) -> tuple[float, str]:
    """Inverse of :func:`page_cursor`; raises ValueError on anything else."""
    stamp, sep, task_id = text.partition("~")
    if not sep or not task_id:
        raise ValueError("bad cursor")
    return float(stamp), task_id


async def runs_of_task(db: Executor, task_id: str) -> list[Row]:
    return await db.fetchall("SELECT * FROM task_runs WHERE task_id = ? ORDER BY wave, created_at, id", (task_id,))


async def runs_of_device(db: Executor, device_id: str, *, limit: int = 100) -> list[Row]:
    return await db.fetchall("SELECT r.*, t.action AS action FROM task_runs r JOIN tasks t ON t.id = r.task_id"
                             " WHERE r.device_id = ? ORDER BY r.created_at DESC LIMIT ?", (device_id, limit))


async def get_run(db: Executor, run_id: str) -> Row | None:
    return await db.fetchone("SELECT * FROM task_runs WHERE id = ?", (run_id,))


async def get_rollout(db: Executor, rollout_id: str) -> Row | None:
    return await db.fetchone("SELECT * FROM rollouts WHERE id = ?", (rollout_id,))


async def rollouts_of_task(db: Executor, task_id: str) -> list[Row]:
    return await db.fetchall("SELECT * FROM rollouts WHERE task_id = ? ORDER BY created_at", (task_id,))


async def schedule_summary(db: Executor, tasks: list[Row]) -> dict[str, dict[str, Any]]:
    """Per task id: ``next_due`` and ``run_counts`` (runs by status), in three queries for the list.

    ``next_due`` is the earliest next occurrence across the devices of a recurring task (None until
    the scheduler has first looked at it), or the earliest due time among a one-off task's open runs
    (None once all finished). A cancelled task has none.
    """
    summary: dict[str, dict[str, Any]] = {t["id"]: {"next_due": None, "run_counts": {}} for t in tasks}
    if not tasks:
        return summary
    ids = [t["id"] for t in tasks]
    marks = ", ".join("?" * len(ids))
    cron_ids = {t["id"] for t in tasks if t["cron"] and t["status"] == "active"}
    once_ids = {t["id"] for t in tasks if not t["cron"] and t["status"] == "active"}
    for row in await db.fetchall(f"SELECT task_id, MIN(next_due) AS due FROM task_schedule_state"  # noqa: S608
                                 f" WHERE task_id IN ({marks}) GROUP BY task_id", ids):
        if row["task_id"] in cron_ids:
            summary[row["task_id"]]["next_due"] = row["due"]
    for row in await db.fetchall(f"SELECT task_id, MIN(due_at) AS due FROM task_runs WHERE task_id IN ({marks})"  # noqa: S608
                                 " AND status IN ('held', 'queued', 'sent', 'waiting') GROUP BY task_id", ids):
        if row["task_id"] in once_ids:
            summary[row["task_id"]]["next_due"] = row["due"]
    for row in await db.fetchall(f"SELECT task_id, status, COUNT(*) AS n FROM task_runs"  # noqa: S608
                                 f" WHERE task_id IN ({marks}) GROUP BY task_id, status", ids):
        summary[row["task_id"]]["run_counts"][row["status"]] = int(row["n"])
    return summary


def describe_task(row: Row, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """The task as the API shows it; ``summary`` (from :func:`schedule_summary`) adds next_due and run_counts."""
    return {**(summary or {}),
        "id": row["id"], "action": row["action"], "params": json.loads(row["params"]),
        "script_sha256": _script_hash(row["script"]), "grant_id": row["grant_id"],
        "technician": row["technician"], "role": row["role"], "target": f"{row['target_kind']}:{row['target']}",
        "group": row["group_name"], "cron": row["cron"], "run_at": row["run_at"], "window_s": row["window_s"],
        "jitter_s": row["jitter_s"], "offline_policy": row["offline_policy"], "wave_percent": row["wave_percent"],
        "failure_threshold": row["failure_threshold"], "status": row["status"], "devices": row["device_count"],
        "timeout_s": row["timeout_s"], "output_cap": row["output_cap"], "created_by": row["created_by"],
        "approved_by": row["approved_by"], "created_at": row["created_at"],
    }


def describe_run(row: Row, *, output: bool = True) -> dict[str, Any]:
    data = {
        "run_id": row["id"], "task_id": row["task_id"], "device_id": row["device_id"], "group": row["group_name"],
        "rollout_id": row["rollout_id"], "wave": row["wave"], "status": row["status"], "due_at": row["due_at"],
        "not_before": row["not_before"], "deliver_by": row["deliver_by"], "sent_at": row["sent_at"],
        "started_at": row["started_at"], "ended_at": row["ended_at"], "exit_code": row["exit_code"],
        "reason": row["reason"], "details": json.loads(row["details"] or "{}"), "truncated": bool(row["truncated"]),
    }
    if "action" in row:
        data["action"] = row["action"]
    if output:
        data["stdout"], data["stderr"] = row["stdout"], row["stderr"]
    return data


def describe_rollout(row: Row, runs: list[Row]) -> dict[str, Any]:
    waves: dict[int, dict[str, int]] = {}
    for run in runs:
        counts = waves.setdefault(run["wave"], {})
        counts[run["status"]] = counts.get(run["status"], 0) + 1
    return {
        "id": row["id"], "task_id": row["task_id"], "status": row["status"], "reason": row["reason"],
        "wave_size": row["wave_size"], "waves": row["waves"], "current_wave": row["current_wave"],
        "failure_threshold": row["failure_threshold"], "failure_rate": failure_rate(runs),
        "by_wave": [{"wave": w, "statuses": waves[w]} for w in sorted(waves)],
        "runs": [describe_run(r, output=False) for r in runs],
    }


def failure_rate(runs: list[Row]) -> float:
    """Failures among finished runs (cancelled and skipped ones do not count either way)."""
    finished = [r for r in runs if r["status"] in FINAL_STATUSES and r["status"] not in NEUTRAL_STATUSES]
    if not finished:
        return 0.0
    return sum(1 for r in finished if r["status"] in FAILURE_STATUSES) / len(finished)


def task_run_message(task: Row, run: Row) -> TaskRun:
    grant = (SignedGrant(document=task["grant_document"], signature=task["grant_signature"])
             if task["grant_document"] and task["grant_signature"] else None)
    return TaskRun(task_id=task["id"], run_id=run["id"], action=task["action"], params=json.loads(task["params"]),
                   grant_id=task["grant_id"], technician=task["technician"], role=task["role"], grant=grant,
                   script=task["script"], script_signature=task["script_signature"], timeout_s=task["timeout_s"],
                   output_cap=task["output_cap"])
