"""Schedules: cron in the device's local timezone, jitter inside the window, offline devices."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from server.errors import ApiError
from server.tasks import lifecycle, repository, service
from server.tasks.cron import Cron, CronError, next_occurrence
from server.tasks.feature import SCHEDULER
from server.tasks.spec import TaskSpec
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.tasks_helpers import signed_spec

#: A clear_temp that touches nothing (dry run): delivery is what these tests check.
HARMLESS = {"targets": ["tmp"], "dry_run": True}


def _ts(y: int, mo: int, d: int, h: int, mi: int, tz: str = "UTC") -> float:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz)).timestamp()


def test_cron_next_occurrence_uses_the_device_timezone() -> None:
    """`0 2 * * 1-5` after Sunday noon UTC is the next Monday 02:00 on the device's own wall clock."""
    sunday_noon = _ts(2026, 1, 4, 12, 0)
    assert next_occurrence("0 2 * * 1-5", sunday_noon, "Asia/Tokyo") == _ts(2026, 1, 5, 2, 0, "Asia/Tokyo")
    assert next_occurrence("0 2 * * 1-5", sunday_noon, "America/New_York") == _ts(2026, 1, 5, 2, 0,
                                                                                   "America/New_York")
    assert next_occurrence("0 2 * * 1-5", sunday_noon, None) == _ts(2026, 1, 5, 2, 0)
    assert next_occurrence("0 2 * * 1-5", sunday_noon, "Not/AZone") == _ts(2026, 1, 5, 2, 0)


def test_cron_fields_steps_names_and_day_or_rule() -> None:
    """Steps, ranges, names and the classic rule: day-of-month OR day-of-week when both are set."""
    cron = Cron.parse("*/15 22-23 1 * sun")
    start = datetime(2026, 1, 1, 23, 50, tzinfo=UTC)  # Thursday the 1st
    assert cron.next_after(start) == datetime(2026, 1, 4, 22, 0, tzinfo=UTC)  # next Sunday
    assert Cron.parse("30 4 * jan-feb 7").next_after(start) == datetime(2026, 1, 4, 4, 30, tzinfo=UTC)
    for bad in ["* * * *", "60 * * * *", "* 5-1 * * *", "*/0 * * * *", "x * * * *"]:
        with pytest.raises(CronError):
            Cron.parse(bad)


async def _device_in(server, tmp_path: Path, tz: str) -> str:
    state = await enroll_agent(server, tmp_path / "agent", group="night")
    await server.db.execute("INSERT INTO inventory_sections (device_id, section, data, checksum, updated_at)"
                            " VALUES (?, 'os', ?, 'x', ?)",
                            (state.device_id, json.dumps({"timezone": {"name": tz, "utc_offset": "+09:00"}}),
                             time.time()))
    return state.device_id


async def test_schedule_fires_in_device_time_with_jitter_then_offline_device_misses(tmp_path: Path) -> None:
    """A nightly schedule fires at 02:00 device time with jitter inside the window; offline all window → missed."""
    async with running_server(tmp_path / "srv") as server:
        device = await _device_in(server, tmp_path, "Asia/Tokyo")
        spec = await signed_spec(server.db, action="updates", params={"mode": "apply"}, group="night",
                                 cron="0 2 * * *", window_s=3600, jitter_s=600, offline_policy="missed")
        created = _ts(2026, 3, 1, 12, 0, "Asia/Tokyo")
        task = await service.create_task(server.db, spec, actor="admin1", now=created)
        rng = random.Random(7)
        due = _ts(2026, 3, 2, 2, 0, "Asia/Tokyo")
        assert await lifecycle.fire_schedules(server.db, created + 60, rng) == 0
        row = await server.db.fetchone("SELECT next_due FROM task_schedule_state WHERE device_id = ?", (device,))
        assert row["next_due"] == due
        assert await lifecycle.fire_schedules(server.db, due + 1, rng) == 1
        (run,) = await repository.runs_of_task(server.db, task["id"])
        assert run["status"] == "queued" and due <= run["not_before"] <= due + 600
        assert run["deliver_by"] == due + 3600
        assert await lifecycle.fire_schedules(server.db, due + 2, rng) == 0  # not twice for one night
        await lifecycle.expire_undelivered(server.db, due + 3601, rng)
        (run,) = await repository.runs_of_task(server.db, task["id"])
        assert run["status"] == "missed" and "offline" in run["reason"]


async def test_offline_device_with_next_policy_runs_at_its_next_window(tmp_path: Path) -> None:
    """With the `next` policy a run the device missed moves to the next night instead of being dropped."""
    async with running_server(tmp_path / "srv") as server:
        await _device_in(server, tmp_path, "Europe/Berlin")
        spec = await signed_spec(server.db, action="reboot", group="night", cron="0 3 * * *", window_s=1800,
                                 offline_policy="next")
        created = _ts(2026, 3, 1, 12, 0, "Europe/Berlin")
        task = await service.create_task(server.db, spec, actor="admin1", now=created)
        rng = random.Random(1)
        await lifecycle.fire_schedules(server.db, created, rng)
        first = _ts(2026, 3, 2, 3, 0, "Europe/Berlin")
        await lifecycle.fire_schedules(server.db, first, rng)
        await lifecycle.expire_undelivered(server.db, first + 1801, rng)
        (run,) = await repository.runs_of_task(server.db, task["id"])
        second = _ts(2026, 3, 3, 3, 0, "Europe/Berlin")
        assert run["status"] == "queued" and run["not_before"] == second and run["deliver_by"] == second + 1800
        await lifecycle.fire_schedules(server.db, second + 5, rng)
        assert len(await repository.runs_of_task(server.db, task["id"])) == 1  # carried over, not duplicated


async def test_bad_task_requests_are_rejected_by_the_server(tmp_path: Path) -> None:
    """Unknown actions, bad or never-firing cron, no target and jitter beyond the window are rejected with codes."""
    async with running_server(tmp_path / "srv") as server:
        await _device_in(server, tmp_path, "UTC")
        cases = [("unknown_action", {"action": "wipe"}), ("bad_schedule", {"cron": "61 * * * *"}),
                 ("bad_schedule", {"cron": "0 0 30 2 *"}), ("bad_window", {"jitter_s": 7200}),
                 ("no_devices", {"group": "empty"})]
        for code, change in cases:
            fields = {"action": "reboot", "document_id": "x", "technician": "a", "group": "night", **change}
            with pytest.raises(ApiError) as err:  # refused before any document is looked at
                await service.create_task(server.db, TaskSpec(**fields), actor="admin1")
            assert err.value.code == code


async def test_one_bad_stored_schedule_does_not_stop_other_deliveries(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Stored rows the scheduler cannot evaluate (a never-firing cron, a corrupt window) are logged with their
    task id and skipped; the real scheduler loop still fires and delivers another group's schedule."""
    async with running_server(tmp_path / "srv") as server:
        scheduler = server.console_app[SCHEDULER]
        scheduler.tick_s = 0.1
        created = time.time() - 300
        scheduler.clock = lambda: created  # nothing is due until the bad rows are in place
        await enroll_agent(server, tmp_path / "bad", group="bad")
        good = await enroll_agent(server, tmp_path / "good", group="good")
        every_minute = {"action": "clear_temp", "params": HARMLESS, "cron": "* * * * *"}
        bad_cron = await service.create_task(server.db, await signed_spec(server.db, group="bad", **every_minute),
                                             actor="admin1", now=created)
        bad_window = await service.create_task(server.db, await signed_spec(server.db, group="bad", **every_minute),
                                               actor="admin1", now=created)
        # As an older server or a hand-edited database could have stored them.
        await server.db.execute("UPDATE tasks SET cron = '0 0 30 2 *' WHERE id = ?", (bad_cron["id"],))
        await server.db.execute("UPDATE tasks SET window_s = 'NaN', jitter_s = 'NaN' WHERE id = ?",
                                (bad_window["id"],))
        good_task = await service.create_task(server.db, await signed_spec(server.db, group="good", **every_minute),
                                              actor="admin1", now=created)
        async with running_agent(good, setup=lambda agent: setattr(agent.tasks, "poll_s", 0.05)):
            await wait_until(lambda: server.connections.get(good.device_id) is not None, what="good agent connected")
            scheduler.clock = time.time
            scheduler.wake.set()

            async def delivered() -> bool:
                runs = await repository.runs_of_task(server.db, good_task["id"])
                return bool(runs) and runs[0]["sent_at"] is not None

            await wait_until(delivered, timeout=30, what="the good group's run delivered")
        assert await repository.runs_of_task(server.db, bad_cron["id"]) == []
        logged = {getattr(r, "task_id", None) for r in caplog.records if r.name == "server.tasks.lifecycle"}
        assert bad_cron["id"] in logged
        failure = next(r for r in caplog.records if getattr(r, "task_id", None) == bad_cron["id"])
        assert failure.exc_info is not None and "never fires" in str(failure.exc_info[1])
