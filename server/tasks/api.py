"""REST API for tasks: list/create, one task with its runs, per-device history, rollouts,
cancel, approve, resume, and the download of a run's diagnostics bundle.

Every route needs RUN_TASKS, declared in :func:`routes`: on the group of the task, run,
rollout or device named in the path (one of another group answers 404 like a missing one),
on at least one group for the listing (filtered in SQL to the caller's groups), and for
creation on the target's group, which only the body names, so the handler checks it.
Approve and resume also need ADMINISTER.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import msgspec
from aiohttp import web

from protocol.authority import TechnicianProof
from protocol.tasks import MAX_SCRIPT_BYTES
from server import api, audit
from server.api import scopes
from server.api.route import Handler
from server.auth.rights import Right
from server.errors import ApiError
from server.storage.objects import artifact_name, ensure_local
from server.storage.serve import send_file
from server.store import Row

from . import repository, service, views
from .artifacts import ArtifactReceiver, artifact_info, expired_info, expired_message
from .spec import TaskRequest

_RUN_TASKS = Right.RUN_TASKS
_ADMIN_CHANGE = Right.RUN_TASKS | Right.ADMINISTER


class TaskListQuery(msgspec.Struct):
    limit: Annotated[int, msgspec.Meta(ge=1, le=repository.MAX_PAGE, description="Page size (default 200).")] = 200
    before: Annotated[str, msgspec.Meta(max_length=128, description="Cursor: the previous page's `next`.")] = ""


async def list_tasks(request: web.Request) -> web.Response:
    """List tasks"""
    q = api.query(request, TaskListQuery)
    try:
        before = views.parse_cursor(q.before) if q.before else None
    except ValueError as exc:
        raise ApiError.invalid("before must be a cursor from a previous page's 'next'") from exc
    db = api.db(request)
    rows = await repository.list_tasks(db, groups=api.principal(request).groups_with(_RUN_TASKS), limit=q.limit,
                                       before=before)
    summary = await repository.schedule_summary(db, rows)
    following = views.page_cursor(rows[-1]) if len(rows) == q.limit else None
    return web.json_response({"tasks": [views.describe_task(r, summary[r["id"]]) for r in rows],
                              "next": following})


async def _task(request: web.Request) -> Row:
    """The task named in the path (its group's right was checked by the route's scope)."""
    task = await repository.get_task(api.db(request), request.match_info["task_id"])
    if task is None:
        raise ApiError.not_found("task")
    return task


async def get_task(request: web.Request) -> web.Response:
    """One task with its runs"""
    db, task = api.db(request), await _task(request)
    runs = await repository.runs_of_task(db, task["id"])
    rollouts = await repository.rollouts_of_task(db, task["id"])
    summary = await repository.schedule_summary(db, [task])
    return web.json_response({"task": views.describe_task(task, summary[task["id"]]),
                              "runs": [views.describe_run(r) for r in runs],
                              "rollouts": [r["id"] for r in rollouts]})


async def device_tasks(request: web.Request) -> web.Response:
    """Task runs on a device"""
    device_id = request.match_info["device_id"]
    runs = await repository.runs_of_device(api.db(request), device_id)
    return web.json_response({"device_id": device_id, "runs": [views.describe_run(r) for r in runs]})


async def get_rollout(request: web.Request) -> web.Response:
    """A rollout's waves and runs"""
    db = api.db(request)
    rollout = await repository.get_rollout(db, request.match_info["rollout_id"])
    if rollout is None:
        raise ApiError.not_found("rollout")
    runs = await repository.runs_of_rollout(db, rollout["id"])
    return web.json_response({"rollout": views.describe_rollout(rollout, runs)})


async def cancel_task(request: web.Request) -> web.Response:
    """Cancel a task's pending runs"""
    task = await _task(request)
    cancelled = await service.cancel_task(api.db(request), task["id"], actor=api.principal(request).username)
    return web.json_response({"task_id": task["id"], "runs_cancelled": cancelled})


async def approve_task(request: web.Request) -> web.Response:
    """Approve a task awaiting approval"""
    task = await _task(request)
    row = await service.approve_task(api.db(request), task["id"], approver=api.principal(request).username)
    return web.json_response({"task": views.describe_task(row)})


async def resume_task(request: web.Request) -> web.Response:
    """Resume a paused task"""
    task = await _task(request)
    row = await service.resume_task(api.db(request), task["id"], actor=api.principal(request).username)
    return web.json_response({"task": views.describe_task(row)})


def _create(approval_threshold: int) -> Handler:
    async def create_task(request: web.Request) -> web.StreamResponse:
        """Create a task"""
        caller = api.principal(request)
        body = api.body(request, TaskRequest)
        if (body.device is None) == (body.group is None):
            raise ApiError(400, "bad_target", "give exactly one target: a device or a group")
        group = body.group
        if body.device is not None:
            group = await repository.device_group(api.db(request), body.device)
            # A device of a group the caller has no right on answers like one that does not exist.
            if group is None or caller.rights_on(group) is Right.NONE:
                raise ApiError.not_found("device")
        if group is None or not caller.can(_RUN_TASKS, group):
            raise ApiError(403, "forbidden", f"requires right run_tasks on group {group!r}")
        authorization = await service.task_document(api.db(request), body.document_id)
        spec = body.spec(technician=caller.username, role=caller.role, authorization=authorization)
        row = await service.create_task(api.db(request), spec, actor=caller.username,
                                        approval_threshold=approval_threshold)
        return web.json_response({"task": views.describe_task(row)}, status=201)

    return create_task


async def _on_this_node(receiver: ArtifactReceiver, run_id: str, path: Path) -> bool:
    """The bundle is on this node's disk, fetched from the shared store if another node received it."""
    if receiver.objects is None:
        return await asyncio.to_thread(path.exists)
    return await ensure_local(receiver.objects, artifact_name(run_id), path)


def _download(receiver: ArtifactReceiver) -> Handler:
    async def run_artifact(request: web.Request) -> web.StreamResponse:
        """Download a run's diagnostics bundle"""
        db = api.db(request)
        run = await repository.get_run(db, request.match_info["run_id"])
        if run is None:
            raise ApiError.not_found("task run")
        info, gone = artifact_info(run), expired_info(run)
        if info is None and gone is not None:
            raise ApiError(410, "artifact_expired", expired_message(run["id"], gone))
        path = receiver.path_of(run["id"]) if info is not None else None
        if info is None or path is None or not await _on_this_node(receiver, run["id"], path):
            raise ApiError(404, "no_artifact", "this run has no stored artifact")
        await audit.append(db, api.principal(request).username, "task.artifact.download", run["id"],
                           {"device_id": run["device_id"], "size": info.get("size"), "sha256": info.get("sha256")})
        return await send_file(request, path, receiver.read_key, {
            "Content-Type": "application/gzip", "X-Content-SHA256": str(info.get("sha256", "")),
            "Content-Disposition": f'attachment; filename="diagnostics-{run["id"]}.tar.gz"'})

    return run_artifact


#: Relays a technician's proof for a run (run, task, proof, username) and returns the run afterwards.
Relay = Callable[[Row, Row, TechnicianProof, str], Awaitable[Row]]


async def get_run(request: web.Request) -> web.Response:
    """One task run"""
    run = await repository.get_run(api.db(request), request.match_info["run_id"])
    if run is None:
        raise ApiError.not_found("task run")
    return web.json_response(views.describe_run(run))


def _prove(relay: Relay) -> Handler:
    async def run_proof(request: web.Request) -> web.StreamResponse:
        """Answer a run's challenge with the technician's proof"""
        proof = api.body(request, TechnicianProof)
        db = api.db(request)
        run = await repository.get_run(db, request.match_info["run_id"])
        if run is None:
            raise ApiError.not_found("task run")
        task = await repository.get_task(db, run["task_id"])
        assert task is not None  # tasks are never deleted
        row = await relay(run, task, proof, api.principal(request).username)
        return web.json_response(views.describe_run(row))

    return run_proof


def routes(receiver: ArtifactReceiver, *, approval_threshold: int, relay: Relay | None = None) -> list[api.Route]:
    """Every task route; ``receiver`` stores the artifacts, ``approval_threshold`` is from the config, ``relay``
    carries technicians' proofs to the agents (None: no proof route)."""
    task = scopes.TASK
    proof_routes = [] if relay is None else [
        api.Route("GET", "/api/v1/tasks/runs/{run_id}", get_run, _RUN_TASKS, scopes.RUN, response="TaskRun",
                  summary="One task run", description="With its output; `details.challenge` while the device waits "
                                                      "for a technician's proof."),
        api.Route("POST", "/api/v1/tasks/runs/{run_id}/proof", _prove(relay), _RUN_TASKS, scopes.RUN,
                  body=TechnicianProof, response="TaskRun",
                  summary="Answer a run's challenge with the technician's proof",
                  description="A task authorization naming technicians runs on a device only when one of them signs "
                              "that device's fresh challenge for the run (the run's `details.challenge`: sign a "
                              "TechnicianStatement over it with action `tasks`, e.g. `helpline approve prove --run`). "
                              "Only the technician who started the task, once per challenge, before it expires. The "
                              "proof is relayed unchanged; the device verifies it against the document's technicians. "
                              "Waits up to 10 s for the outcome. Audited `task.proof_relayed`.",
                  errors={403: "Not the technician who started the task",
                          409: "No open challenge, already answered (`proof_sent`) or expired"}),
    ]
    return [*proof_routes,
        api.Route("GET", "/api/v1/tasks", list_tasks, _RUN_TASKS, query=TaskListQuery, response="TaskPage",
                  summary="List tasks", description="Only groups where the caller holds run_tasks; newest first."),
        api.Route("POST", "/api/v1/tasks", _create(approval_threshold), _RUN_TASKS, body=TaskRequest,
                  response="TaskEnvelope", status=201, summary="Create a task",
                  max_body=MAX_SCRIPT_BYTES * 4 + 64 * 1024,
                  description="`run_tasks` on the target's group. The task runs under the approver-signed task "
                              "authorization `document_id` names: action, parameters, script SHA-256 and schedule "
                              "are the document's (given ones must equal them), and devices verify it themselves. "
                              "Runs on more devices than the approval threshold wait for a second admin. Audited "
                              "`task.create`.",
                  errors={404: "No such device (or one of a group the caller has no right on)",
                          409: "The document is withdrawn or not a task authorization (`document_unusable`), the "
                               "task differs from it (`document_mismatch`), or it does not name the target "
                               "(`not_covered`)"}),
        api.Route("GET", "/api/v1/tasks/{task_id}", get_task, _RUN_TASKS, task, response="TaskDetail",
                  summary="One task with its runs"),
        api.Route("POST", "/api/v1/tasks/{task_id}/cancel", cancel_task, _RUN_TASKS, task,
                  response="TaskCancelled", summary="Cancel a task's pending runs",
                  description="Runs not yet delivered are cancelled; delivered ones are stopped by their agents."),
        api.Route("POST", "/api/v1/tasks/{task_id}/approve", approve_task, _ADMIN_CHANGE, task,
                  response="TaskEnvelope", summary="Approve a task awaiting approval",
                  description="By an admin other than its creator. Audited `task.approve`.",
                  errors={409: "Not awaiting approval (`not_pending`), or the creator's own (`same_admin`)"}),
        api.Route("POST", "/api/v1/tasks/{task_id}/resume", resume_task, _ADMIN_CHANGE, task,
                  response="TaskEnvelope", summary="Resume a paused task",
                  description="A schedule paused by a stopped occurrence fires again at each device's next "
                              "occurrence. Audited `task.resume`.",
                  errors={409: "Not paused (`not_paused`)"}),
        api.Route("GET", "/api/v1/tasks/runs/{run_id}/artifact", _download(receiver), _RUN_TASKS, scopes.RUN,
                  summary="Download a run's diagnostics bundle",
                  description="A `.tar.gz`; header `X-Content-SHA256` carries its digest. Audited "
                              "`task.artifact.download`.",
                  content={"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
                  errors={404: "No such run (or one of a group the caller has no right on), or no artifact",
                          410: "The artifact expired (`artifact_expired`)"}),
        api.Route("GET", "/api/v1/devices/{device_id}/tasks", device_tasks, _RUN_TASKS, scopes.DEVICE,
                  response="DeviceTaskRuns", summary="Task runs on a device"),
        api.Route("GET", "/api/v1/rollouts/{rollout_id}", get_rollout, _RUN_TASKS, scopes.ROLLOUT,
                  response="RolloutEnvelope", summary="A rollout's waves and runs"),
    ]
