"""Recurring group schedules in waves: each occurrence is a rollout that stops and pauses the schedule
at the failure threshold; resume by an admin (store, REST, CLI). Store tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web

from certs import tls
from protocol.tasks import TaskResult
from server.api.context import AUTHENTICATORS
from server.auth.rights import Principal, Right
from server.errors import ApiError
from server.store import Database
from server.tasks import lifecycle, repository, service
from tests.conftest import add_device
from tests.harness import console_url, running_server
from tests.tasks_helpers import signed_spec

ROOT = Path(__file__).resolve().parent.parent


def _ts(y: int, mo: int, d: int, h: int, mi: int, tz: str = "UTC") -> float:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz)).timestamp()


CREATED = _ts(2026, 3, 1, 12, 0)  # Sunday noon UTC
TOKYO_DUE = _ts(2026, 3, 2, 2, 0, "Asia/Tokyo")  # 17:00 UTC on the 1st
UTC_DUE = _ts(2026, 3, 2, 2, 0)


async def _fleet(db: Database, tokyo: int = 2, utc: int = 2) -> dict[str, str]:
    """Devices in group "fleet": the first ``tokyo`` report Asia/Tokyo, the rest UTC."""
    zones = {}
    for i in range(tokyo + utc):
        device = await add_device(db, f"dev-{i}", "fleet")
        zones[device] = "Asia/Tokyo" if i < tokyo else "UTC"
        await db.execute("INSERT INTO inventory_sections (device_id, section, data, checksum, updated_at)"
                         " VALUES (?, 'os', ?, 'x', ?)", (device, json.dumps({"timezone": {"name": zones[device]}}),
                                                          CREATED))
    return zones


async def _schedule(db: Database, **extra: object) -> dict[str, object]:
    fields: dict[str, object] = {"action": "updates", "params": {"mode": "apply"}, "group": "fleet",
                                 "cron": "0 2 * * *", "window_s": 3600, "wave_percent": 50, "failure_threshold": 0.4,
                                 **extra}
    return dict(await service.create_task(db, await signed_spec(db, **fields), actor="admin1", now=CREATED))


async def _finish(db: Database, run: dict[str, object], status: str, at: float) -> None:
    result = TaskResult(run_id=str(run["id"]), status=status, ended_at=at,  # type: ignore[arg-type]
                        exit_code=0 if status == "succeeded" else 1)
    assert await lifecycle.record_result(db, str(run["device_id"]), result) is not None


async def _actions(db: Database) -> list[str]:
    return [r["action"] for r in await db.fetchall("SELECT action FROM audit_log ORDER BY seq")]


async def test_occurrence_over_threshold_stops_its_waves_and_pauses_the_schedule(db: Database) -> None:
    """One rollout per occurrence, earliest-due devices first; 50 % failures > 40 % stops it and pauses the task,
    which fires no more until resumed; resume starts at the next occurrence after now."""
    zones = await _fleet(db)
    task = await _schedule(db)
    rng = random.Random(3)
    assert await lifecycle.fire_schedules(db, CREATED + 60, rng) == 0
    assert await lifecycle.fire_schedules(db, TOKYO_DUE + 1, rng) == 4
    assert await lifecycle.fire_schedules(db, TOKYO_DUE + 2, rng) == 0  # not twice for one occurrence
    runs = await repository.runs_of_task(db, str(task["id"]))
    assert len({r["rollout_id"] for r in runs}) == 1
    first_wave = [r for r in runs if r["wave"] == 0]
    assert {zones[r["device_id"]] for r in first_wave} == {"Asia/Tokyo"}
    assert all(r["status"] == "queued" for r in first_wave)
    assert {(r["status"], r["due_at"]) for r in runs if r["wave"] == 1} == {("held", UTC_DUE)}
    await _finish(db, first_wave[0], "succeeded", TOKYO_DUE + 100)
    assert await lifecycle.advance_rollouts(db, TOKYO_DUE + 101) == []  # wave still running
    await _finish(db, first_wave[1], "failed", TOKYO_DUE + 200)
    stopped = await lifecycle.advance_rollouts(db, TOKYO_DUE + 201)
    assert stopped == [runs[0]["rollout_id"]]
    runs = await repository.runs_of_task(db, str(task["id"]))
    assert sorted(r["status"] for r in runs if r["wave"] == 1) == ["cancelled", "cancelled"]
    paused = await repository.get_task(db, str(task["id"]))
    assert paused is not None and paused["status"] == "paused"
    assert "task.pause" in await _actions(db) and "rollout.stop" in await _actions(db)

    next_day = TOKYO_DUE + 86400 + 60
    assert await lifecycle.fire_schedules(db, next_day, rng) == 0  # paused: nothing fires
    resumed = await service.resume_task(db, str(task["id"]), actor="admin2", now=next_day)
    assert resumed["status"] == "active"
    with pytest.raises(ApiError) as again:
        await service.resume_task(db, str(task["id"]), actor="admin2", now=next_day)
    assert again.value.code == "not_paused"
    states = await db.fetchall("SELECT next_due FROM task_schedule_state WHERE task_id = ?", (task["id"],))
    assert len(states) == 4 and all(s["next_due"] > next_day for s in states)  # missed occurrences not caught up
    assert await lifecycle.fire_schedules(db, next_day + 1, rng) == 0
    assert await lifecycle.fire_schedules(db, TOKYO_DUE + 2 * 86400 + 1, rng) == 4
    rollouts = await repository.rollouts_of_task(db, str(task["id"]))
    assert [r["status"] for r in rollouts] == ["stopped", "running"]
    resume_rows = await db.fetchall("SELECT actor FROM audit_log WHERE action = 'task.resume'")
    assert [r["actor"] for r in resume_rows] == ["admin2"]


async def test_waves_keep_device_due_times_and_offline_devices_are_skipped_not_failed(db: Database) -> None:
    """A released wave keeps each device's own local due time; a run undelivered in its window is skipped
    (not a failure) so the occurrence completes; an occurrence is skipped while the previous one still rolls out."""
    await _fleet(db)
    task = await _schedule(db, offline_policy="next")
    rng = random.Random(5)
    await lifecycle.fire_schedules(db, TOKYO_DUE, rng)
    runs = await repository.runs_of_task(db, str(task["id"]))
    first, second = [r for r in runs if r["wave"] == 0], [r for r in runs if r["wave"] == 1]
    await _finish(db, first[0], "succeeded", TOKYO_DUE + 10)
    assert await lifecycle.expire_undelivered(db, TOKYO_DUE + 3601, rng) == 1  # first[1]'s device stayed offline
    skipped = await repository.get_run(db, first[1]["id"])
    assert skipped is not None and skipped["status"] == "skipped" and "next occurrence" in skipped["reason"]
    assert await lifecycle.advance_rollouts(db, TOKYO_DUE + 3602) == []
    released = [await repository.get_run(db, r["id"]) for r in second]
    assert all(r is not None and r["status"] == "queued" and r["not_before"] == UTC_DUE for r in released)
    assert await lifecycle.due_device_ids(db, TOKYO_DUE + 3603) == set()  # not before their own 02:00
    assert await lifecycle.due_device_ids(db, UTC_DUE) == {r["device_id"] for r in second}

    # The next Tokyo occurrence comes while wave 2 is still open: it is skipped (audited), not overlapped.
    assert await lifecycle.fire_schedules(db, TOKYO_DUE + 86400, rng) == 0
    assert "rollout.skip" in await _actions(db)
    for run in second:
        await _finish(db, run, "succeeded", UTC_DUE + 10)
    await lifecycle.advance_rollouts(db, UTC_DUE + 11)
    (rollout,) = await repository.rollouts_of_task(db, str(task["id"]))
    assert rollout["status"] == "completed"
    still = await repository.get_task(db, str(task["id"]))
    assert still is not None and still["status"] == "active"


async def test_concurrent_schedulers_fire_one_occurrence_once(db: Database) -> None:
    """Two scheduler passes racing on the same occurrence (two nodes on one database) create one rollout."""
    await _fleet(db)
    task = await _schedule(db)
    await lifecycle.fire_schedules(db, CREATED, random.Random(1))  # schedule state created
    counts = await asyncio.gather(*(lifecycle.fire_schedules(db, TOKYO_DUE + 1, random.Random(i)) for i in range(3)))
    assert sorted(counts) == [0, 0, 4]
    assert len(await repository.rollouts_of_task(db, str(task["id"]))) == 1
    assert len(await repository.runs_of_task(db, str(task["id"]))) == 4
    assert "rollout.skip" not in await _actions(db)  # the losers saw the moved state, not a running rollout


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "helpline", "admin", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


async def test_resume_needs_admin_rights_through_the_api_and_works_from_the_cli(tmp_path: Path) -> None:
    """POST /tasks/{id}/resume needs RUN_TASKS and ADMINISTER (403 otherwise, 409 when not paused);
    `helpline admin task resume ID` resumes and is audited."""
    data = tmp_path / "srv"
    async with running_server(data) as server:
        await _fleet(server.db, tokyo=0, utc=2)
        task = await _schedule(server.db)
        await server.db.execute("UPDATE tasks SET status = 'paused' WHERE id = ?", (task["id"],))

        async def as_header(request: web.Request) -> Principal | None:
            rights = {"tech": Right.RUN_TASKS, "boss": Right.RUN_TASKS | Right.ADMINISTER}
            name = request.headers.get("X-Test-User", "")
            return Principal(name, name, "technician", {"fleet": rights[name]}) if name in rights else None

        server.console_app[AUTHENTICATORS].append(as_header)
        ctx: ssl.SSLContext = tls.agent_client_context(server.pki.ca_pem, None, None)
        url = f"{console_url(server)}/api/v1/tasks/{task['id']}/resume"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, ssl=ctx, headers={"X-Test-User": "tech"}) as resp:
                assert resp.status == 403
            async with http.post(url, ssl=ctx, headers={"X-Test-User": "boss"}) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["task"]["status"] == "active"
            async with http.post(url, ssl=ctx, headers={"X-Test-User": "boss"}) as resp:
                assert resp.status == 409 and (await resp.json())["error"]["code"] == "not_paused"
        await server.db.execute("UPDATE tasks SET status = 'paused' WHERE id = ?", (task["id"],))
        done = await asyncio.to_thread(_cli, "task", "resume", str(task["id"]), "--data", str(data))
        assert done.returncode == 0, done.stderr
        row = await repository.get_task(server.db, str(task["id"]))
        assert row is not None and row["status"] == "active"
        actors = [r["actor"] for r in await server.db.fetchall(
            "SELECT actor FROM audit_log WHERE action = 'task.resume' ORDER BY seq")]
        assert actors[0] == "boss" and actors[1].startswith("cli:")
        again = await asyncio.to_thread(_cli, "task", "resume", str(task["id"]), "--data", str(data))
        assert again.returncode == 1 and "not paused" in again.stderr
