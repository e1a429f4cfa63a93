"""OpenAPI paths for maintenance tasks, their runs, rollouts and diagnostics artifacts."""

from __future__ import annotations

from .common import NULLABLE_NUM, NULLABLE_STR, Json, array, merge, obj, operation, param, path_param, ref

_TASK = path_param("task_id", "Task id.")
_ACTION = {"type": "string", "enum": ["diagnostics", "restart_service", "clear_temp", "updates", "reboot", "script"]}

SCHEMAS: Json = {
    "TaskRequest": obj({
        "action": _ACTION,
        "grant_id": {"type": "string", "description": "Active grant allowing `tasks` on the target."},
        "grant": {"type": "object", "required": ["document", "signature"],
                  "description": "Optional SignedGrant {document, signature} sent along to the agent."},
        "params": {"type": "object", "additionalProperties": True},
        "script": {"type": "string"}, "script_signature": {"type": "string"},
        "device": {"type": "string", "description": "One device; or give group."},
        "group": {"type": "string", "description": "Every device of the group."},
        "cron": {"type": "string", "description": "Five-field cron (device-local time): a recurring task."},
        "run_at": {"type": "number", "description": "One-off start (epoch s; default now)."},
        "window_s": {"type": "number", "default": 3600}, "jitter_s": {"type": "number", "default": 0},
        "offline_policy": {"type": "string", "enum": ["next", "missed"], "default": "next"},
        "wave_percent": {"type": "integer", "description": "Roll out in waves of this share of devices."},
        "failure_threshold": {"type": "number", "default": 0.2},
        "timeout_s": {"type": "number", "default": 1800}, "output_cap": {"type": "integer", "default": 65536}},
        required=["action", "grant_id"]),
    "Task": obj({
        "id": {"type": "string"}, "action": {"type": "string"}, "params": {"type": "object"},
        "script_sha256": NULLABLE_STR, "grant_id": {"type": "string"}, "technician": {"type": "string"},
        "role": {"type": "string"}, "target": {"type": "string", "description": "`device:ID` or `group:NAME`."},
        "group": NULLABLE_STR, "cron": NULLABLE_STR, "run_at": NULLABLE_NUM, "window_s": {"type": "number"},
        "jitter_s": {"type": "number"}, "offline_policy": {"type": "string"},
        "wave_percent": {"type": ["integer", "null"]}, "failure_threshold": {"type": "number"},
        "status": {"type": "string"}, "devices": {"type": "integer"}, "timeout_s": {"type": "number"},
        "output_cap": {"type": "integer"}, "created_by": {"type": "string"}, "approved_by": NULLABLE_STR,
        "created_at": {"type": "number"},
        "next_due": {**NULLABLE_NUM, "description": "Earliest next occurrence (listings and detail only)."},
        "run_counts": {"type": "object", "additionalProperties": {"type": "integer"},
                       "description": "Runs by status (listings and detail only)."}},
        required=["id", "action", "status", "target", "created_at"]),
    "TaskRun": obj({
        "run_id": {"type": "string"}, "task_id": {"type": "string"}, "device_id": {"type": "string"},
        "group": {"type": "string"}, "rollout_id": NULLABLE_STR, "wave": {"type": ["integer", "null"]},
        "status": {"type": "string"}, "due_at": NULLABLE_NUM, "not_before": NULLABLE_NUM,
        "deliver_by": NULLABLE_NUM, "sent_at": NULLABLE_NUM, "started_at": NULLABLE_NUM, "ended_at": NULLABLE_NUM,
        "exit_code": {"type": ["integer", "null"]}, "reason": NULLABLE_STR,
        "details": {"type": "object", "additionalProperties": True}, "truncated": {"type": "boolean"},
        "action": {"type": "string"}, "stdout": NULLABLE_STR, "stderr": NULLABLE_STR},
        required=["run_id", "task_id", "device_id", "status"]),
    "Rollout": obj({
        "id": {"type": "string"}, "task_id": {"type": "string"}, "status": {"type": "string"},
        "reason": NULLABLE_STR, "wave_size": {"type": "integer"}, "waves": {"type": "integer"},
        "current_wave": {"type": "integer"}, "failure_threshold": {"type": "number"},
        "failure_rate": {"type": "number"},
        "by_wave": array(obj({"wave": {"type": "integer"},
                              "statuses": {"type": "object", "additionalProperties": {"type": "integer"}}})),
        "runs": {"type": "array", "items": ref("TaskRun"), "description": "Without stdout/stderr."}}),
    "TaskEnvelope": obj({"task": ref("Task")}),
}

_NOT_FOUND = {404: "No such task"}


def paths() -> Json:
    return {
        "/api/v1/tasks": merge(
            operation("get", "List tasks", right="run_tasks", params=[
                param("limit", "query", {"type": "integer", "minimum": 1}, "Page size (default 200)."),
                param("before", "query", {"type": "string"}, "Cursor: the previous page's `next`.")],
                description="Only groups where the caller holds run_tasks; newest first.",
                ok=obj({"tasks": array(ref("Task")), "next": NULLABLE_STR}), errors={400: "Bad limit or cursor"}),
            operation("post", "Create a task", right="run_tasks", body=ref("TaskRequest"),
                      description="`run_tasks` on the target's group. Runs on more devices than the approval "
                                  "threshold wait for a second admin. Audited.",
                      ok=ref("TaskEnvelope"), ok_status=201,
                      errors={400: "Invalid task request", 404: "No such device"})),
        "/api/v1/tasks/{task_id}": operation(
            "get", "One task with its runs", right="run_tasks", params=[_TASK],
            ok=obj({"task": ref("Task"), "runs": array(ref("TaskRun")),
                    "rollouts": {"type": "array", "items": {"type": "string"}}}), errors=_NOT_FOUND),
        "/api/v1/tasks/{task_id}/cancel": operation(
            "post", "Cancel a task's pending runs", right="run_tasks", params=[_TASK],
            ok=obj({"task_id": {"type": "string"}, "runs_cancelled": {"type": "integer"}}), errors=_NOT_FOUND),
        "/api/v1/tasks/{task_id}/approve": operation(
            "post", "Approve a task awaiting approval", right="run_tasks+administer", params=[_TASK],
            description="By an admin other than its creator.", ok=ref("TaskEnvelope"),
            errors=_NOT_FOUND | {409: "Not awaiting approval, or own task"}),
        "/api/v1/tasks/{task_id}/resume": operation(
            "post", "Resume a paused task", right="run_tasks+administer", params=[_TASK],
            ok=ref("TaskEnvelope"), errors=_NOT_FOUND | {409: "Not paused"}),
        "/api/v1/tasks/runs/{run_id}/artifact": operation(
            "get", "Download a run's diagnostics bundle", right="run_tasks",
            params=[path_param("run_id", "Run id.")],
            description="A `.tar.gz`; header `X-Content-SHA256` carries its digest. Audited "
                        "`task.artifact.download`.",
            content={"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
            errors={404: "No such run, or no artifact", 410: "The artifact expired"}),
        "/api/v1/devices/{device_id}/tasks": operation(
            "get", "Task runs on a device", right="run_tasks", params=[path_param("device_id", "Device id.")],
            ok=obj({"device_id": {"type": "string"}, "runs": array(ref("TaskRun"))}),
            errors={404: "No such device"}),
        "/api/v1/rollouts/{rollout_id}": operation(
            "get", "A rollout's waves and runs", right="run_tasks", params=[path_param("rollout_id", "Rollout id.")],
            ok=obj({"rollout": ref("Rollout")}), errors={404: "No such rollout"}),
    }
