"""Task rows as the API and the CLI show them, and as the agent receives them.

Pure functions of database rows (no I/O); their JSON shapes are the ``Task``, ``TaskRun`` and
``Rollout`` schemas in :mod:`server.tasks.openapi`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from protocol.authority import SignedDocument
from protocol.tasks import TaskRun, script_sha256

from ..store import Row
from .status import failure_rate


def script_hash(script: str | None) -> str | None:
    return script_sha256(script) if script else None


def describe_task(row: Row, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """The task as the API shows it; ``summary`` (from ``repository.schedule_summary``) adds next_due and run_counts."""
    return {**(summary or {}),
        "id": row["id"], "action": row["action"], "params": json.loads(row["params"]),
        "script_sha256": script_hash(row["script"]), "document_id": row["document_id"],
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
        "failure_threshold": row["failure_threshold"], "failure_rate": failure_rate(r["status"] for r in runs),
        "by_wave": [{"wave": w, "statuses": waves[w]} for w in sorted(waves)],
        "runs": [describe_run(r, output=False) for r in runs],
    }


def page_cursor(row: Row) -> str:
    """Opaque cursor naming a row's place in the listing (``created_at`` round-trips via repr)."""
    return f"{row['created_at']!r}~{row['id']}"


def parse_cursor(text: str) -> tuple[float, str]:
    """Inverse of :func:`page_cursor`; raises ValueError on anything else (also NaN and infinities)."""
    stamp, sep, task_id = text.partition("~")
    if not sep or not task_id:
        raise ValueError("bad cursor")
    value = float(stamp)
    if not math.isfinite(value):
        raise ValueError("bad cursor")
    return value, task_id


def task_run_message(task: Row, run: Row, authorization: SignedDocument | None) -> TaskRun:
    """What the agent receives for one run: the task, the signed authorization as the server holds it now
    (with every approval gathered), and for a recurring task the occurrence (its due time) — the agent
    re-checks all of it and runs each occurrence at most once."""
    return TaskRun(task_id=task["id"], run_id=run["id"], action=task["action"], params=json.loads(task["params"]),
                   technician=task["technician"], role=task["role"], script=task["script"],
                   authorization=authorization, scheduled_at=run["due_at"] if task["cron"] else None,
                   timeout_s=task["timeout_s"], output_cap=task["output_cap"])
