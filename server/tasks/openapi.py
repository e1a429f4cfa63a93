"""Response schemas of the task routes (paths come from the route table, :func:`server.tasks.api.routes`).

The request body (``TaskRequest``) and the listing query are msgspec types; their schemas are
generated from them.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

_NULLABLE_NUM: Json = {"type": ["number", "null"]}
_NULLABLE_STR: Json = {"type": ["string", "null"]}
_COUNTS: Json = {"type": "object", "additionalProperties": {"type": "integer"}}


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(items: Json) -> Json:
    return {"type": "array", "items": items}


def _obj(properties: Json, required: list[str] | None = None) -> Json:
    """An object schema; every property is required unless ``required`` says otherwise."""
    return {"type": "object", "required": list(properties) if required is None else required,
            "properties": properties}


SCHEMAS: Json = {
    "Task": _obj({
        "id": {"type": "string"}, "action": {"type": "string"}, "params": {"type": "object"},
        "script_sha256": _NULLABLE_STR,
        "document_id": {**_NULLABLE_STR, "description": "The approver-signed task authorization it runs under."},
        "technician": {"type": "string"},
        "role": {"type": "string"}, "target": {"type": "string", "description": "`device:ID` or `group:NAME`."},
        "group": _NULLABLE_STR, "cron": _NULLABLE_STR, "run_at": _NULLABLE_NUM, "window_s": {"type": "number"},
        "jitter_s": {"type": "number"}, "offline_policy": {"type": "string"},
        "wave_percent": {"type": ["integer", "null"]}, "failure_threshold": {"type": "number"},
        "status": {"type": "string", "enum": ["pending_approval", "active", "paused", "cancelled"]},
        "devices": {"type": "integer"}, "timeout_s": {"type": "number"},
        "output_cap": {"type": "integer"}, "created_by": {"type": "string"}, "approved_by": _NULLABLE_STR,
        "created_at": {"type": "number"},
        "next_due": {**_NULLABLE_NUM, "description": "Earliest next occurrence (listings and detail only)."},
        "run_counts": {**_COUNTS, "description": "Runs by status (listings and detail only)."}},
        required=["id", "action", "status", "target", "created_at"]),
    "TaskRun": _obj({
        "run_id": {"type": "string"}, "task_id": {"type": "string"}, "device_id": {"type": "string"},
        "group": {"type": "string"}, "rollout_id": _NULLABLE_STR, "wave": {"type": ["integer", "null"]},
        "status": {"type": "string", "enum": ["held", "queued", "sent", "waiting", "succeeded", "failed",
                                              "timed_out", "refused", "cancelled", "missed", "skipped"]},
        "due_at": _NULLABLE_NUM, "not_before": _NULLABLE_NUM,
        "deliver_by": _NULLABLE_NUM, "sent_at": _NULLABLE_NUM, "started_at": _NULLABLE_NUM, "ended_at": _NULLABLE_NUM,
        "exit_code": {"type": ["integer", "null"]}, "reason": _NULLABLE_STR,
        "details": {"type": "object", "additionalProperties": True}, "truncated": {"type": "boolean"},
        "action": {"type": "string"}, "stdout": _NULLABLE_STR, "stderr": _NULLABLE_STR},
        required=["run_id", "task_id", "device_id", "status"]),
    "Rollout": _obj({
        "id": {"type": "string"}, "task_id": {"type": "string"},
        "status": {"type": "string", "enum": ["running", "stopped", "completed", "cancelled"]},
        "reason": _NULLABLE_STR, "wave_size": {"type": "integer"}, "waves": {"type": "integer"},
        "current_wave": {"type": "integer"}, "failure_threshold": {"type": "number"},
        "failure_rate": {"type": "number"},
        "by_wave": _array(_obj({"wave": {"type": "integer"}, "statuses": _COUNTS})),
        "runs": {"type": "array", "items": _ref("TaskRun"), "description": "Without stdout/stderr."}}),
    "TaskEnvelope": _obj({"task": _ref("Task")}),
    "TaskPage": _obj({"tasks": _array(_ref("Task")), "next": {
        **_NULLABLE_STR, "description": "Cursor for the next page (`before`); null at the end."}}),
    "TaskDetail": _obj({"task": _ref("Task"), "runs": _array(_ref("TaskRun")),
                        "rollouts": {"type": "array", "items": {"type": "string"}, "description": "Rollout ids."}}),
    "TaskCancelled": _obj({"task_id": {"type": "string"}, "runs_cancelled": {"type": "integer"}}),
    "DeviceTaskRuns": _obj({"device_id": {"type": "string"}, "runs": _array(_ref("TaskRun"))}),
    "RolloutEnvelope": _obj({"rollout": _ref("Rollout")}),
}
