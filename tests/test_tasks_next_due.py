"""The task list API tells when each task next fires (``next_due``) and how its runs stand
(``run_counts``), so the console's Tasks page needs no per-task requests."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from server.tasks import lifecycle, service
from server.tasks.cron import next_occurrence
from tests.harness import enroll_agent, running_server
from tests.tasks_helpers import signed_spec
from tests.test_accounts_support import client, login, make_user


async def _tasks_by_id(http: Any) -> dict[str, dict[str, Any]]:
    async with http.get("/api/v1/tasks") as resp:
        assert resp.status == 200
        return {t["id"]: t for t in (await resp.json())["tasks"]}


async def test_task_list_shows_next_due_for_cron_and_one_off_tasks(tmp_path: Path) -> None:
    """Cron: the earliest next occurrence (device-local) across devices; one-off: its open run's due time;
    cancelled: none; run_counts count runs by status."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="night")
        await server.db.execute("INSERT INTO inventory_sections (device_id, section, data, checksum, updated_at)"
                                " VALUES (?, 'os', ?, 'x', ?)",
                                (state.device_id, json.dumps({"timezone": {"name": "Asia/Tokyo"}}), time.time()))
        nightly = await service.create_task(server.db, await signed_spec(
            server.db, action="updates", params={"mode": "check"}, group="night", cron="0 2 * * *"), actor="admin1")
        run_at = time.time() + 7200
        once = await service.create_task(server.db, await signed_spec(
            server.db, action="updates", params={"mode": "check"}, device=state.device_id, run_at=run_at),
            actor="admin1")
        await lifecycle.fire_schedules(server.db, time.time(), random.Random(1))
        expected = next_occurrence("0 2 * * *", nightly["created_at"], "Asia/Tokyo")

        async with client(server) as http:
            assert (await login(http, await make_user(server, "ops", "admin"))).status == 200
            listed = await _tasks_by_id(http)
            assert listed[nightly["id"]]["next_due"] == expected > time.time()
            assert listed[nightly["id"]]["run_counts"] == {}
            assert listed[once["id"]]["next_due"] == run_at
            assert listed[once["id"]]["run_counts"] == {"queued": 1}
            async with http.get(f"/api/v1/tasks/{once['id']}") as resp:
                assert (await resp.json())["task"]["next_due"] == run_at
            await service.cancel_task(server.db, once["id"], actor="admin1")
            listed = await _tasks_by_id(http)
            assert listed[once["id"]]["next_due"] is None
            assert listed[once["id"]]["run_counts"] == {"cancelled": 1}
