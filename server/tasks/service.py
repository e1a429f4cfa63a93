"""What admins do to tasks — create, approve, cancel, resume — shared by the REST API and the CLI.

Each operation is one transaction: the rows change, the audit record is written and the event
for the live server(s) is published together, or none of it happens. Refusals are
:class:`~server.errors.ApiError` with a stable ``code`` (``no_devices``, ``unknown_document``,
``document_unusable``, ``document_mismatch``, ``not_covered``, ``not_pending``, ``same_admin``,
``not_paused``, ``not_found``); the CLI prints the same message.

A task names the approver-signed TaskAuthorization it runs under; the server checks that the task
is what the document says only to report mistakes early — it cannot make a task run: the devices
verify the document, its approvals and each occurrence themselves.
"""

from __future__ import annotations

import math
import random
import time

from protocol.authority import TaskAuthorization
from server.authority import repository as documents

from .. import audit, events
from ..errors import ApiError
from ..store import Database, Row, Transaction
from . import repository
from .cron import next_occurrence
from .spec import TaskSpec, document_problem
from .status import RunStatus, TaskStatus
from .views import script_hash

#: Events for the live server(s): a task changed (wake the scheduler) or was cancelled.
TASK_CHANGED = "task.changed"
TASK_CANCELLED = "task.cancelled"
#: Runs on more devices than this need a second admin (``task_approval_threshold`` in the config).
DEFAULT_APPROVAL_THRESHOLD = 25


async def task_document(db: Database | Transaction, document_id: str) -> TaskAuthorization:
    """The open TaskAuthorization stored as ``document_id`` (ApiError otherwise)."""
    row = await documents.get_document(db, document_id)
    if row is None:
        raise ApiError(400, "unknown_document", f"no signed document {document_id!r}; submit it with "
                                                "'helpline approve submit' first")
    if row["kind"] != "task" or row["status"] != "open":
        what = "withdrawn" if row["status"] != "open" else f"a {row['kind']} document, not a task authorization"
        raise ApiError(409, "document_unusable", f"document {document_id} is {what}")
    body = documents.decode(documents.signed_of(row))
    assert isinstance(body, TaskAuthorization)
    return body


def _covers(task: TaskAuthorization, kind: str, target: str, devices: list[Row]) -> str | None:
    """Why the document does not name every target device (None when it does)."""
    if kind == "group":
        if target in task.groups:
            return None
        missing = [d["id"] for d in devices if d["id"] not in task.devices]
        if not missing:
            return None
        return (f"task authorization {task.task_id} names neither group {target!r} nor device(s) "
                f"{', '.join(missing[:5])}")
    device = devices[0]
    if device["id"] in task.devices or device["group_name"] in task.groups:
        return None
    return f"task authorization {task.task_id} names neither device {device['id']} nor its group"


async def create_task(db: Database, spec: TaskSpec, *, actor: str,
                      approval_threshold: int = DEFAULT_APPROVAL_THRESHOLD, now: float | None = None,
                      rng: random.Random | None = None) -> Row:
    """Store and audit a (validated) spec; runs start at once unless the fleet size needs a second admin."""
    now = time.time() if now is None else now
    kind, target = spec.target
    async with db.transaction() as tx:
        devices = await repository.active_devices(tx, kind, target)
        if not devices:
            raise ApiError(400, "no_devices", f"no active device in {kind} {target!r}")
        signed = await task_document(tx, spec.document_id)
        problem = document_problem(spec, signed)
        if problem:
            raise ApiError(409, "document_mismatch", problem)
        uncovered = _covers(signed, kind, target, devices)
        if uncovered:
            raise ApiError(409, "not_covered", uncovered)
        status = TaskStatus.PENDING_APPROVAL if len(devices) > approval_threshold else TaskStatus.ACTIVE
        task = await repository.insert_task(
            tx, spec, task_id=repository.new_id("t"), status=status, device_count=len(devices),
            group=devices[0]["group_name"] if kind == "device" else target, actor=actor, now=now)
        if status is TaskStatus.ACTIVE:
            await _materialize(tx, task, devices, now, rng or random.Random())
        await audit.append_in(tx, actor, "task.create", task["id"], {
            "action": spec.action, "target": f"{kind}:{target}", "devices": len(devices),
            "document_id": spec.document_id, "cron": spec.cron, "status": status.value,
            "script_sha256": script_hash(spec.script), "params": spec.params})
        await events.publish_in(tx, TASK_CHANGED, task["id"])
    return await _reread(db, task["id"])


async def _materialize(tx: Transaction, task: Row, devices: list[Row], now: float, rng: random.Random) -> None:
    """Create the runs of a one-off task (recurring ones get runs when they fire)."""
    if task["cron"]:
        return
    due = task["run_at"] if task["run_at"] is not None else now
    rollout_id, wave_size = None, len(devices)
    if task["wave_percent"] and len(devices) > 1:
        wave_size = max(1, math.ceil(len(devices) * task["wave_percent"] / 100))
        rollout_id = await repository.insert_rollout(tx, task["id"], wave_size=wave_size,
                                                     waves=math.ceil(len(devices) / wave_size),
                                                     failure_threshold=task["failure_threshold"], now=now)
    order = list(devices)
    rng.shuffle(order)
    for index, device in enumerate(order):
        wave = index // wave_size if rollout_id else 0
        await repository.insert_run(tx, task, device["id"], device["group_name"], due, now, rng,
                                    rollout_id=rollout_id, wave=wave,
                                    status=RunStatus.QUEUED if wave == 0 else RunStatus.HELD)


async def _existing(tx: Transaction, task_id: str) -> Row:
    task = await repository.get_task(tx, task_id)
    if task is None:
        raise ApiError(404, "not_found", f"no task {task_id!r}")
    return task


async def _reread(db: Database, task_id: str) -> Row:
    task = await repository.get_task(db, task_id)
    assert task is not None  # tasks are never deleted
    return task


async def approve_task(db: Database, task_id: str, *, approver: str, now: float | None = None,
                       rng: random.Random | None = None) -> Row:
    """Second-admin approval of a large run: the approver must not be the creator."""
    now = time.time() if now is None else now
    async with db.transaction() as tx:
        task = await _existing(tx, task_id)
        if task["status"] != TaskStatus.PENDING_APPROVAL:
            raise ApiError(409, "not_pending", f"task {task_id} is {task['status']}, not waiting for approval")
        if approver == task["created_by"]:
            raise ApiError(409, "same_admin", "a second admin must approve: the creator cannot approve their own task")
        # Conditional: of two concurrent approvals (PostgreSQL runs both at once) only one materializes runs.
        if not await repository.move_task(tx, task_id, {TaskStatus.PENDING_APPROVAL}, TaskStatus.ACTIVE, now,
                                          approved_by=approver):
            raise ApiError(409, "not_pending", f"task {task_id} was approved or cancelled meanwhile")
        devices = await repository.active_devices(tx, task["target_kind"], task["target"])
        await _materialize(tx, await _existing(tx, task_id), devices, now, rng or random.Random())
        await audit.append_in(tx, approver, "task.approve", task_id, {"created_by": task["created_by"],
                                                                     "devices": task["device_count"]})
        await events.publish_in(tx, TASK_CHANGED, task_id)
    return await _reread(db, task_id)


async def cancel_task(db: Database, task_id: str, *, actor: str, now: float | None = None) -> int:
    """Stop a task: runs not yet delivered are cancelled here, delivered ones by the agent."""
    now = time.time() if now is None else now
    async with db.transaction() as tx:
        await _existing(tx, task_id)
        live = {TaskStatus.PENDING_APPROVAL, TaskStatus.ACTIVE, TaskStatus.PAUSED}
        if not await repository.move_task(tx, task_id, live, TaskStatus.CANCELLED, now):
            return 0  # already cancelled, maybe by a concurrent request
        reason = f"cancelled by {actor}"
        changed = await repository.move_runs(tx, {RunStatus.HELD, RunStatus.QUEUED}, RunStatus.CANCELLED, now,
                                             task_id=task_id, reason=reason, ended_at=now)
        await repository.cancel_rollouts(tx, task_id, reason, now)
        await audit.append_in(tx, actor, "task.cancel", task_id, {"runs_cancelled": changed})
        await events.publish_in(tx, TASK_CANCELLED, task_id)
    return changed


async def resume_task(db: Database, task_id: str, *, actor: str, now: float | None = None) -> Row:
    """Resume a schedule paused by a stopped occurrence; it fires next at each device's next occurrence."""
    now = time.time() if now is None else now
    async with db.transaction() as tx:
        task = await _existing(tx, task_id)
        if not await repository.move_task(tx, task_id, {TaskStatus.PAUSED}, TaskStatus.ACTIVE, now):
            raise ApiError(409, "not_paused", f"task {task_id} is {task['status']}, not paused")
        # Occurrences that fell due while paused are not caught up: each device starts afresh after now.
        for device_id in await repository.scheduled_devices(tx, task_id):
            following = next_occurrence(task["cron"], now, await repository.device_timezone(tx, device_id))
            await repository.set_next_due(tx, task_id, device_id, following)
        await audit.append_in(tx, actor, "task.resume", task_id, {"cron": task["cron"]})
        await events.publish_in(tx, TASK_CHANGED, task_id)
    return await _reread(db, task_id)
