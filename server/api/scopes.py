"""The scopes routes check rights on: which device group an object named in a path belongs to.

One query each, answered None when the object does not exist; the enforcing middleware turns
both "no such object" and "no right at all on its group" into the same 404.
"""

from __future__ import annotations

from server.store import Database

from .route import Scope


async def _one(db: Database, sql: str, key: str) -> str | None:
    if len(key) > 200:
        return None
    row = await db.fetchone(sql, (key,))
    return None if row is None else str(row["group_name"])


async def device_group(db: Database, device_id: str) -> str | None:
    return await _one(db, "SELECT group_name FROM devices WHERE id = ?", device_id)


async def session_group(db: Database, session_id: str) -> str | None:
    return await _one(db, "SELECT group_name FROM sessions WHERE id = ?", session_id)


async def task_group(db: Database, task_id: str) -> str | None:
    return await _one(db, "SELECT group_name FROM tasks WHERE id = ?", task_id)


async def run_group(db: Database, run_id: str) -> str | None:
    return await _one(db, "SELECT group_name FROM task_runs WHERE id = ?", run_id)


async def rollout_group(db: Database, rollout_id: str) -> str | None:
    return await _one(db, "SELECT t.group_name FROM rollouts r JOIN tasks t ON t.id = r.task_id WHERE r.id = ?",
                      rollout_id)


DEVICE = Scope("device", "device_id", device_group)
SESSION = Scope("session", "session_id", session_group)
TASK = Scope("task", "task_id", task_group)
RUN = Scope("task run", "run_id", run_group)
ROLLOUT = Scope("rollout", "rollout_id", rollout_group)
