"""The task routes on the declared-route frame: each declared with its right and scope, tasks, runs,
rollouts and devices of another group answering exactly like missing ones, the typed create body
(limits, non-finite numbers, unknown fields), the approver-signed document it must match, and the second
admin's approval through the API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from server.api import scopes
from server.api.context import AUTHENTICATORS, ROUTES
from server.api.openapi import document_for
from server.app import HelplineServer
from server.auth.rights import Principal, Right
from server.tasks import repository, service
from server.tasks.spec import TaskSpec
from tests.conftest import add_device
from tests.harness import console_url, running_server
from tests.tasks_helpers import authorize, make_org, store
from tests.test_accounts_support import ssl_context

ORG = make_org()
#: What approvers signed for each group: clear_temp as a dry run (the server only stores it; agents verify it).
DOCUMENTS = {group: authorize(ORG, groups=[group], action="clear_temp", params={"dry_run": True},
                              task_id=f"clear-{group}") for group in ("lab", "office")}
RIGHTS = {
    "tech": {"lab": Right.RUN_TASKS},
    "viewer": {"lab": Right.VIEW_INVENTORY},
    "boss": {"lab": Right.RUN_TASKS | Right.ADMINISTER},
    "boss2": {"lab": Right.RUN_TASKS | Right.ADMINISTER},
}


async def _as_header(request: web.Request) -> Principal | None:
    name = request.headers.get("X-Test-User", "")
    return Principal(name, name, "technician", RIGHTS[name]) if name in RIGHTS else None


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[HelplineServer]:
    async with running_server(tmp_path / "srv", task_approval_threshold=1) as running:
        running.console_app[AUTHENTICATORS].append(_as_header)
        for device, group in (("dev-lab", "lab"), ("dev-lab2", "lab"), ("dev-office", "office"),
                              ("dev-office2", "office")):
            await add_device(running.db, device, group)
        for document in DOCUMENTS.values():
            await store(running.db, document)
        yield running


async def _call(server: HelplineServer, method: str, path: str, user: str, body: Any = None,
                raw: bytes | None = None) -> tuple[int, Any]:
    headers = {"X-Test-User": user}
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with aiohttp.ClientSession() as http, http.request(
            method, console_url(server) + path, data=data, headers=headers, ssl=ssl_context(server)) as resp:
        return resp.status, await resp.json()


async def _task(server: HelplineServer, group: str, **extra: Any) -> dict[str, Any]:
    spec = TaskSpec(action="clear_temp", document_id=f"clear-{group}", technician="alice", params={"dry_run": True},
                    group=group, **extra)
    return dict(await service.create_task(server.db, spec, actor="admin1", approval_threshold=10))


async def test_every_task_route_is_declared_with_its_right_and_scope(server: HelplineServer) -> None:
    """The live router's task routes all sit in the declared table with RUN_TASKS (approve/resume also
    ADMINISTER) on the scope of the object in their path, and the OpenAPI document says the same."""
    declared = {(r.method, r.path): r for r in server.console_app[ROUTES].values()}
    expected = {
        ("GET", "/api/v1/tasks"): (Right.RUN_TASKS, None),
        ("POST", "/api/v1/tasks"): (Right.RUN_TASKS, None),
        ("GET", "/api/v1/tasks/{task_id}"): (Right.RUN_TASKS, scopes.TASK),
        ("POST", "/api/v1/tasks/{task_id}/cancel"): (Right.RUN_TASKS, scopes.TASK),
        ("POST", "/api/v1/tasks/{task_id}/approve"): (Right.RUN_TASKS | Right.ADMINISTER, scopes.TASK),
        ("POST", "/api/v1/tasks/{task_id}/resume"): (Right.RUN_TASKS | Right.ADMINISTER, scopes.TASK),
        ("GET", "/api/v1/tasks/runs/{run_id}/artifact"): (Right.RUN_TASKS, scopes.RUN),
        ("GET", "/api/v1/tasks/runs/{run_id}"): (Right.RUN_TASKS, scopes.RUN),
        ("POST", "/api/v1/tasks/runs/{run_id}/proof"): (Right.RUN_TASKS, scopes.RUN),
        ("GET", "/api/v1/devices/{device_id}/tasks"): (Right.RUN_TASKS, scopes.DEVICE),
        ("GET", "/api/v1/rollouts/{rollout_id}"): (Right.RUN_TASKS, scopes.ROLLOUT),
    }
    assert {key: (declared[key].access, declared[key].scope) for key in expected} == expected
    live = {(r.method, r.resource.canonical) for r in server.console_app.router.routes() if r.resource is not None}
    task_paths = {k for k in live if k[1].startswith(("/api/v1/tasks", "/api/v1/rollouts")) or k[1].endswith("/tasks")}
    task_paths -= {("HEAD", p) for _, p in live}
    assert task_paths == set(expected)  # nothing routed around the table
    doc = document_for(server.console_app)
    assert doc["paths"]["/api/v1/tasks/{task_id}/approve"]["post"]["x-helpline-right"] == "run_tasks+administer"
    create = doc["paths"]["/api/v1/tasks"]["post"]
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TaskEnvelope"}
    request = doc["components"]["schemas"]["TaskRequest"]
    assert request["properties"]["window_s"]["exclusiveMinimum"] == 0 and "script" in request["properties"]
    for name in ("Task", "TaskRun", "Rollout", "TaskPage", "TaskDetail", "TaskCancelled", "DeviceTaskRuns",
                 "RolloutEnvelope"):
        assert name in doc["components"]["schemas"]


async def test_objects_of_another_group_answer_exactly_like_missing_ones(server: HelplineServer) -> None:
    """Tasks, runs, rollouts and devices of a group the caller has no right on are 404 'no such …',
    byte for byte like unknown ids; the listing shows only the caller's groups."""
    mine = await _task(server, "lab")
    theirs = await _task(server, "office", wave_percent=50)
    (run,) = [r for r in await repository.runs_of_task(server.db, theirs["id"]) if r["wave"] == 0]
    rollout = run["rollout_id"]
    assert rollout is not None
    for path, noun in ((f"/api/v1/tasks/{theirs['id']}", "task"), (f"/api/v1/rollouts/{rollout}", "rollout"),
                       (f"/api/v1/tasks/runs/{run['id']}/artifact", "task run"),
                       ("/api/v1/devices/dev-office/tasks", "device")):
        missing = path.replace(theirs["id"], "t_missing").replace(rollout, "ro_missing").replace(
            run["id"], "r_missing").replace("dev-office", "dev-missing")
        expected = (404, {"error": {"code": "not_found", "message": f"no such {noun}"}})
        assert await _call(server, "GET", path, "tech") == await _call(server, "GET", missing, "tech") == expected
    cancelled = await _call(server, "POST", f"/api/v1/tasks/{theirs['id']}/cancel", "tech")
    assert cancelled == (404, {"error": {"code": "not_found", "message": "no such task"}})
    assert (await repository.get_task(server.db, theirs["id"]) or {})["status"] == "active"
    status, listed = await _call(server, "GET", "/api/v1/tasks", "tech")
    assert status == 200 and [t["id"] for t in listed["tasks"]] == [mine["id"]] and listed["next"] is None
    # Some right on the group, but not RUN_TASKS: the object exists for them, the right is missing.
    assert (await _call(server, "GET", f"/api/v1/tasks/{mine['id']}", "viewer"))[0] == 403
    assert (await _call(server, "GET", "/api/v1/tasks?before=nan~x", "tech"))[0] == 400
    status, detail = await _call(server, "GET", f"/api/v1/tasks/{mine['id']}", "tech")
    assert status == 200 and len(detail["runs"]) == 2 and detail["task"]["run_counts"] == {"queued": 2}


async def test_create_body_is_typed_limited_and_checked_against_the_target_group(server: HelplineServer) -> None:
    """Unknown actions and fields, non-finite or out-of-range numbers are 400 before anything is stored;
    rule codes (bad_window) are kept; another group's device is 404, a group without the right 403; a task
    that is not what its document says, or a document that is not there, is refused too."""
    base: dict[str, Any] = {"document_id": "clear-lab"}
    bad_bodies = [{**base, "device": "dev-lab", "action": "wipe"}, {**base, "device": "dev-lab", "surprise": 1},
                  {**base, "device": "dev-lab", "window_s": 0}, {**base, "device": "dev-lab", "wave_percent": 101},
                  {**base, "device": "dev-lab", "failure_threshold": 1.5}, {**base, "device": "x" * 300}]
    for body in bad_bodies:
        status, error = await _call(server, "POST", "/api/v1/tasks", "tech", body)
        assert (status, error["error"]["code"]) == (400, "invalid"), body
    for raw in (b'{"document_id": "clear-lab", "device": "dev-lab", "window_s": NaN}',
                b'{"document_id": "clear-lab", "device": "dev-lab", "window_s": 1e999}'):
        status, error = await _call(server, "POST", "/api/v1/tasks", "tech", raw=raw)
        assert status == 400 and error["error"]["code"] in ("invalid", "malformed"), raw
    status, error = await _call(server, "POST", "/api/v1/tasks", "tech",
                                {**base, "device": "dev-lab", "window_s": 60, "jitter_s": 120})
    assert (status, error["error"]["code"]) == (400, "bad_window")
    status, error = await _call(server, "POST", "/api/v1/tasks", "tech", {**base, "device": "dev-lab",
                                                                        "group": "lab"})
    assert (status, error["error"]["code"]) == (400, "bad_target")
    assert await _call(server, "POST", "/api/v1/tasks", "tech", {**base, "device": "dev-office"}) == await _call(
        server, "POST", "/api/v1/tasks", "tech", {**base, "device": "dev-nowhere"}) == (
        404, {"error": {"code": "not_found", "message": "no such device"}})
    status, error = await _call(server, "POST", "/api/v1/tasks", "tech", {**base, "group": "office"})
    assert (status, error["error"]["code"]) == (403, "forbidden")
    assert (await _call(server, "POST", "/api/v1/tasks", "viewer", {**base, "device": "dev-lab"}))[0] == 403
    for body, code in (({**base, "device": "dev-lab", "params": {"dry_run": False}}, "document_mismatch"),
                       ({**base, "device": "dev-lab", "action": "diagnostics"}, "document_mismatch"),
                       ({**base, "device": "dev-lab", "cron": "0 2 * * *"}, "document_mismatch"),
                       ({"document_id": "clear-office", "device": "dev-lab"}, "not_covered"),
                       ({"document_id": "nothing-here", "device": "dev-lab"}, "unknown_document")):
        status, error = await _call(server, "POST", "/api/v1/tasks", "tech", body)
        assert error["error"]["code"] == code and status in (400, 409), (body, error)
    assert await repository.list_tasks(server.db) == []
    status, created = await _call(server, "POST", "/api/v1/tasks", "tech", {**base, "device": "dev-lab"})
    assert status == 201 and created["task"]["technician"] == "tech" and created["task"]["status"] == "active"
    assert created["task"]["target"] == "device:dev-lab" and created["task"]["document_id"] == "clear-lab"
    assert created["task"]["action"] == "clear_temp" and created["task"]["params"] == {"dry_run": True}


async def test_approval_through_the_api_needs_administer_and_a_second_admin(server: HelplineServer) -> None:
    """Over the threshold a task waits; its creator cannot approve it (409 same_admin), a technician
    without ADMINISTER gets 403, another admin approves once (then 409 not_pending)."""
    body = {"document_id": "clear-lab", "group": "lab"}
    status, created = await _call(server, "POST", "/api/v1/tasks", "boss", body)
    assert status == 201 and created["task"]["status"] == "pending_approval"
    url = f"/api/v1/tasks/{created['task']['id']}/approve"
    assert (await _call(server, "POST", url, "boss"))[1]["error"]["code"] == "same_admin"
    assert (await _call(server, "POST", url, "tech"))[0] == 403
    status, approved = await _call(server, "POST", url, "boss2")
    assert status == 200 and approved["task"]["status"] == "active" and approved["task"]["approved_by"] == "boss2"
    assert await _call(server, "POST", url, "boss2") == (409, {"error": {
        "code": "not_pending", "message": f"task {created['task']['id']} is active, not waiting for approval"}})
    assert len(await repository.runs_of_task(server.db, created["task"]["id"])) == 2
