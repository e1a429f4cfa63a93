"""REST API for tasks: list/create, one task with its runs, per-device history, rollouts, cancel, approve, resume.

Every route checks RUN_TASKS on the device group concerned through ``require``; listings
only show groups where the caller holds it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from protocol.grants import SignedGrant

from .. import audit, devices
from ..agent_channel import SERVER_KEY
from ..auth.middleware import principal_of, require
from ..auth.rights import Right
from ..http_util import json_error
from ..store import Database, Row
from . import store
from .artifacts import ArtifactReceiver, artifact_info, expired_info, expired_message

if TYPE_CHECKING:
    from ..app import HelplineServer


def approval_threshold(server: HelplineServer) -> int:
    """Runs on more devices than this need a second admin (``task_approval_threshold`` in config)."""
    return int(getattr(server.config, "task_approval_threshold", store.DEFAULT_APPROVAL_THRESHOLD))


async def list_tasks(request: web.Request) -> web.Response:
    server: HelplineServer = request.app[SERVER_KEY]
    principal = principal_of(request)
    groups = principal.groups_with(Right.RUN_TASKS)
    if groups is not None and not groups:
        require(request, Right.RUN_TASKS)
    try:
        limit = int(request.query.get("limit", "200"))
        cursor = request.query.get("before")
        before = store.parse_cursor(cursor) if cursor else None
    except ValueError:
        return json_error(400, "bad_request", "limit must be an integer and before a cursor from 'next'")
    if not 1 <= limit <= store.MAX_PAGE:
        return json_error(400, "bad_request", f"limit must be within 1..{store.MAX_PAGE}")
    rows = await store.list_tasks(server.db, groups=groups, limit=limit, before=before)
    summary = await store.schedule_summary(server.db, rows)
    following = store.page_cursor(rows[-1]) if len(rows) == limit else None
    return web.json_response({"tasks": [store.describe_task(r, summary[r["id"]]) for r in rows],
                              "next": following})


async def get_task(request: web.Request) -> web.Response:
    server: HelplineServer = request.app[SERVER_KEY]
    task = await store.get_task(server.db, request.match_info["task_id"])
    if task is None:
        return json_error(404, "not_found", "no such task")
    require(request, Right.RUN_TASKS, task["group_name"])
    runs = await store.runs_of_task(server.db, task["id"])
    rollouts = await store.rollouts_of_task(server.db, task["id"])
    summary = await store.schedule_summary(server.db, [task])
    return web.json_response({"task": store.describe_task(task, summary[task["id"]]),
                              "runs": [store.describe_run(r) for r in runs],
                              "rollouts": [r["id"] for r in rollouts]})


async def device_tasks(request: web.Request) -> web.Response:
    server: HelplineServer = request.app[SERVER_KEY]
    device = await devices.get(server.db, request.match_info["device_id"])
    if device is None:
        return json_error(404, "not_found", "no such device")
    require(request, Right.RUN_TASKS, device["group_name"])
    runs = await store.runs_of_device(server.db, device["id"])
    return web.json_response({"device_id": device["id"], "runs": [store.describe_run(r) for r in runs]})


async def get_rollout(request: web.Request) -> web.Response:
    server: HelplineServer = request.app[SERVER_KEY]
    rollout = await store.get_rollout(server.db, request.match_info["rollout_id"])
    if rollout is None:
        return json_error(404, "not_found", "no such rollout")
    task = await store.get_task(server.db, rollout["task_id"])
    require(request, Right.RUN_TASKS, task["group_name"] if task else None)
    runs = await server.db.fetchall("SELECT * FROM task_runs WHERE rollout_id = ? ORDER BY wave, id",
                                    (rollout["id"],))
    return web.json_response({"rollout": store.describe_rollout(rollout, runs)})


def _spec(body: dict[str, Any], technician: str, role: str) -> store.TaskSpec:
    grant = body.get("grant")
    return store.TaskSpec(
        action=str(body["action"]), grant_id=str(body["grant_id"]), technician=technician, role=role,
        params=dict(body.get("params", {})), script=body.get("script"), script_signature=body.get("script_signature"),
        device=body.get("device"), group=body.get("group"), cron=body.get("cron"), run_at=body.get("run_at"),
        window_s=float(body.get("window_s", 3600)), jitter_s=float(body.get("jitter_s", 0)),
        offline_policy=body.get("offline_policy", "next"), wave_percent=body.get("wave_percent"),
        failure_threshold=float(body.get("failure_threshold", 0.2)), timeout_s=float(body.get("timeout_s", 1800)),
        output_cap=int(body.get("output_cap", 65536)),
        grant=msgspec.convert(grant, SignedGrant) if grant else None)


async def create_task(request: web.Request) -> web.Response:
    server: HelplineServer = request.app[SERVER_KEY]
    principal = principal_of(request)
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        spec = _spec(body, principal.username, principal.role)
    except (ValueError, KeyError, TypeError, msgspec.ValidationError) as exc:
        return json_error(400, "bad_request", f"invalid task request: {exc}")
    group = spec.group
    if spec.device is not None:
        device = await devices.get(server.db, spec.device)
        if device is None:
            return json_error(404, "not_found", "no such device")
        group = device["group_name"]
    require(request, Right.RUN_TASKS, group)
    try:
        row = await store.create_task(server.db, spec, actor=principal.username,
                                      approval_threshold=approval_threshold(server))
    except store.TaskError as exc:
        return json_error(400, exc.code, exc.message)
    return web.json_response({"task": store.describe_task(row)}, status=201)


async def cancel_task(request: web.Request) -> web.Response:
    server: HelplineServer = request.app[SERVER_KEY]
    task = await store.get_task(server.db, request.match_info["task_id"])
    if task is None:
        return json_error(404, "not_found", "no such task")
    principal = require(request, Right.RUN_TASKS, task["group_name"])
    cancelled = await store.cancel_task(server.db, task["id"], actor=principal.username)
    return web.json_response({"task_id": task["id"], "runs_cancelled": cancelled})


async def _admin_change(request: web.Request,
                        change: Callable[[Database, str, str], Awaitable[Row]]) -> web.Response:
    """Approve/resume: a task state change that needs RUN_TASKS and ADMINISTER on its group."""
    server: HelplineServer = request.app[SERVER_KEY]
    task = await store.get_task(server.db, request.match_info["task_id"])
    if task is None:
        return json_error(404, "not_found", "no such task")
    principal = require(request, Right.RUN_TASKS | Right.ADMINISTER, task["group_name"])
    try:
        row = await change(server.db, task["id"], principal.username)
    except store.TaskError as exc:
        return json_error(409, exc.code, exc.message)
    return web.json_response({"task": store.describe_task(row)})


async def approve_task(request: web.Request) -> web.Response:
    return await _admin_change(request, lambda db, task_id, who: store.approve_task(db, task_id, approver=who))


async def resume_task(request: web.Request) -> web.Response:
    return await _admin_change(request, lambda db, task_id, who: store.resume_task(db, task_id, actor=who))


def artifact_route(receiver: ArtifactReceiver) -> Any:
    """``GET /api/v1/tasks/runs/{run_id}/artifact``: the run's stored bundle (RUN_TASKS, audited); 410 once expired."""

    async def get_artifact(request: web.Request) -> web.StreamResponse:
        server: HelplineServer = request.app[SERVER_KEY]
        run = await store.get_run(server.db, request.match_info["run_id"])
        if run is None:
            return json_error(404, "not_found", "no such run")
        principal = require(request, Right.RUN_TASKS, run["group_name"])
        info = artifact_info(run)
        gone = expired_info(run)
        if info is None and gone is not None:
            return json_error(410, "artifact_expired", expired_message(run["id"], gone))
        path = receiver.path_of(run["id"]) if info is not None else None
        if info is None or path is None or not path.exists():
            return json_error(404, "no_artifact", "this run has no stored artifact")
        await audit.append(server.db, principal.username, "task.artifact.download", run["id"],
                           {"device_id": run["device_id"], "size": info.get("size"), "sha256": info.get("sha256")})
        return web.FileResponse(path, headers={
            "Content-Type": "application/gzip", "X-Content-SHA256": str(info.get("sha256", "")),
            "Content-Disposition": f'attachment; filename="diagnostics-{run["id"]}.tar.gz"'})

    return get_artifact


def setup_routes(server: HelplineServer, receiver: ArtifactReceiver) -> None:
    router = server.console_app.router
    router.add_get("/api/v1/tasks/runs/{run_id}/artifact", artifact_route(receiver))
    router.add_get("/api/v1/tasks", list_tasks)
    router.add_post("/api/v1/tasks", create_task)
    router.add_get("/api/v1/tasks/{task_id}", get_task)
    router.add_post("/api/v1/tasks/{task_id}/cancel", cancel_task)
    router.add_post("/api/v1/tasks/{task_id}/approve", approve_task)
    router.add_post("/api/v1/tasks/{task_id}/resume", resume_task)
    router.add_get("/api/v1/devices/{device_id}/tasks", device_tasks)
    router.add_get("/api/v1/rollouts/{rollout_id}", get_rollout)
