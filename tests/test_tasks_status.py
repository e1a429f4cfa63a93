"""Run statuses move only along the transition table, refused in the repository's one place (both
engines); a task spec refuses non-finite numbers and windows when it is built."""

from __future__ import annotations

import math
import random
import time
from typing import Any, get_args

import pytest

from protocol.tasks import TERMINAL_STATUSES, TaskResult
from protocol.tasks import Status as ProtocolStatus
from server.errors import ApiError
from server.store import Database
from server.tasks import lifecycle, repository, service
from server.tasks.spec import TaskSpec
from server.tasks.status import FINAL, OPEN, RESULTS, TRANSITIONS, RunStatus, check, failure_rate, sources
from tests.conftest import add_device
from tests.tasks_helpers import signed_spec


def _spec(**extra: Any) -> TaskSpec:
    fields: dict[str, Any] = {"action": "clear_temp", "document_id": "task-1", "technician": "alice",
                              "device": "dev-1", **extra}
    return TaskSpec(**fields)


async def _signed(db: Database, **extra: Any) -> TaskSpec:
    return await signed_spec(db, **{"action": "clear_temp", "device": "dev-1", **extra})


def test_the_table_has_one_entry_per_status_and_agrees_with_the_protocol() -> None:
    """Every status has its row; open ones can move, final ones cannot; agents report exactly RESULTS."""
    assert set(TRANSITIONS) == set(RunStatus)
    assert {RunStatus.HELD, RunStatus.QUEUED, RunStatus.SENT, RunStatus.WAITING} == OPEN
    assert set(RunStatus) - OPEN == FINAL
    assert {s.value for s in RESULTS} == set(get_args(ProtocolStatus)) == TERMINAL_STATUSES
    assert sources(RunStatus.SENT) == {RunStatus.QUEUED}
    assert sources(RunStatus.SUCCEEDED) == {RunStatus.QUEUED, RunStatus.SENT, RunStatus.WAITING}
    check(RunStatus.HELD, RunStatus.QUEUED)
    for old, new in ((RunStatus.CANCELLED, RunStatus.QUEUED), (RunStatus.HELD, RunStatus.SENT),
                     (RunStatus.SENT, RunStatus.MISSED), (RunStatus.SUCCEEDED, RunStatus.FAILED)):
        with pytest.raises(ValueError, match="cannot go from"):
            check(old, new)
    assert failure_rate(["succeeded", "failed", "cancelled", "skipped", "queued"]) == 0.5
    assert failure_rate(["cancelled"]) == 0.0


@pytest.mark.parametrize(("change", "code"), [
    ({"window_s": math.nan}, "bad_window"), ({"window_s": math.inf}, "bad_window"),
    ({"jitter_s": math.nan}, "bad_window"), ({"window_s": 60, "jitter_s": 61}, "bad_window"),
    ({"window_s": 40 * 86400}, "bad_window"), ({"run_at": math.inf}, "bad_schedule"),
    ({"run_at": math.nan}, "bad_schedule"), ({"timeout_s": math.nan}, "bad_timeout"),
    ({"failure_threshold": math.nan}, "bad_threshold"), ({"cron": "0 0 30 2 *"}, "bad_schedule"),
    ({"offline_policy": "later"}, "bad_offline_policy"), ({"group": "lab"}, "bad_target"),
    ({"action": "script"}, "bad_params"), ({"action": "format_disk"}, "unknown_action"),
])
def test_a_spec_is_refused_when_built(change: dict[str, Any], code: str) -> None:
    """Non-finite or out-of-range numbers and windows never reach the service: building the spec refuses them."""
    with pytest.raises(ApiError) as refused:
        _spec(**change)
    assert (refused.value.status, refused.value.code) == (400, code)


async def test_illegal_moves_change_nothing_in_the_database(db: Database) -> None:
    """A cancelled run cannot be delivered, waited on or given a result; bulk moves from a final status
    are refused before any SQL runs; a run cannot be created already delivered."""
    device = await add_device(db, "dev-1", "lab")
    task = await service.create_task(db, await _signed(db, device=device, params={"dry_run": True}), actor="admin1")
    (run,) = await repository.runs_of_task(db, task["id"])
    assert run["status"] == RunStatus.QUEUED
    assert await service.cancel_task(db, task["id"], actor="admin1") == 1
    now = time.time()
    assert not await repository.move_run(db, run["id"], RunStatus.SENT, now, sent_at=now)
    await lifecycle.mark_waiting(db, device, run["id"], "outside the window")
    stored = await lifecycle.record_result(db, device, TaskResult(
        run_id=run["id"], status="succeeded", exit_code=0, started_at=now, ended_at=now))
    assert stored is not None and stored["status"] == RunStatus.CANCELLED and stored["sent_at"] is None
    (after,) = await repository.runs_of_task(db, task["id"])
    assert after["status"] == RunStatus.CANCELLED and after["exit_code"] is None
    with pytest.raises(ValueError, match="cannot go from"):
        await repository.move_runs(db, {RunStatus.CANCELLED}, RunStatus.QUEUED, now, task_id=task["id"])
    with pytest.raises(ValueError, match="not a settable"):
        await repository.move_run(db, run["id"], RunStatus.SENT, now, status="queued")
    row = await repository.get_task(db, task["id"])
    assert row is not None
    with pytest.raises(ValueError, match="cannot start"):
        await repository.insert_run(db, row, device, "lab", now, now, random.Random(1), status=RunStatus.SENT)


async def test_a_held_run_takes_no_result(db: Database) -> None:
    """A run of a wave not yet released was never delivered: an agent's result for it is not applied."""
    for name in ("dev-1", "dev-2"):
        await add_device(db, name, "lab")
    task = await service.create_task(db, await _signed(db, device=None, group="lab", wave_percent=50, params={"dry_run": True}),
                                     actor="admin1")
    held = next(r for r in await repository.runs_of_task(db, task["id"]) if r["status"] == RunStatus.HELD)
    now = time.time()
    stored = await lifecycle.record_result(db, held["device_id"], TaskResult(
        run_id=held["id"], status="failed", exit_code=1, started_at=now, ended_at=now))
    assert stored is not None and stored["status"] == RunStatus.HELD and stored["exit_code"] is None
    assert await repository.release_wave(db, held["rollout_id"], 1, now) == 1
    assert (await repository.get_run(db, held["id"]) or {})["status"] == RunStatus.QUEUED
