"""Fleet safety: waves that stop at the failure threshold, and second-admin approval for large runs."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest

from server import audit
from server.errors import ApiError
from server.tasks import repository, service
from server.tasks.feature import SCHEDULER
from tests.harness import enroll_agent, running_server, wait_until
from tests.tasks_helpers import authorize, make_org, signed_spec, submit, task_agent


async def test_wave_rollout_stops_when_failure_rate_passes_threshold(tmp_path: Path) -> None:
    """Waves of 25 %: wave 1 succeeds, wave 2 fails (50 % > 40 %), so the rollout stops and later waves never run."""
    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        server.console_app[SCHEDULER].tick_s = 0.1
        states = [await enroll_agent(server, tmp_path / f"agent{i}", group="fleet") for i in range(4)]
        async with contextlib.AsyncExitStack() as stack:
            for state in states:
                await stack.enter_async_context(task_agent(
                    server, state, org, setup=lambda agent: setattr(agent.tasks, "poll_s", 0.05)))
            # The script fails on a device whose state dir holds a "fail" file (cwd is <state>/task-work/<run>).
            script = 'echo ran > ../../ran\nif [ -e ../../fail ]; then exit 1; fi\n'
            params = {"interpreter": "sh", "args": []}
            document = authorize(org, groups=["fleet"], script=script, params=params)
            task = await submit(server, document, group="fleet", script=script, wave_percent=25,
                                failure_threshold=0.4)
            runs = await repository.runs_of_task(server.db, task["id"])
            by_wave = {r["wave"]: r for r in runs}
            assert sorted(by_wave) == [0, 1, 2, 3] and [r["status"] for r in runs] == ["queued", "held", "held", "held"]
            dirs = {s.device_id: s.directory for s in states}
            (dirs[by_wave[1]["device_id"]] / "fail").touch()
            rollout_id = runs[0]["rollout_id"]

            async def stopped() -> bool:
                row = await repository.get_rollout(server.db, rollout_id)
                return row["status"] == "stopped"

            await wait_until(stopped, timeout=30, what="rollout stopped")
            runs = {r["wave"]: r for r in await repository.runs_of_task(server.db, task["id"])}
            assert [runs[w]["status"] for w in range(4)] == ["succeeded", "failed", "cancelled", "cancelled"]
            for wave in (2, 3):
                assert not (dirs[runs[wave]["device_id"]] / "ran").exists()
            rollout = await repository.get_rollout(server.db, rollout_id)
            assert "50%" in rollout["reason"] and "40%" in rollout["reason"]
            actions = [r["action"] for r in await server.db.fetchall("SELECT action FROM audit_log")]
            assert "rollout.wave" in actions and "rollout.stop" in actions
            assert (await audit.verify_chain(server.db)).ok


async def test_large_run_needs_a_second_admin(tmp_path: Path) -> None:
    """A run on more devices than the threshold waits for approval, which its creator cannot give."""
    async with running_server(tmp_path / "srv") as server:
        for i in range(3):
            await enroll_agent(server, tmp_path / f"agent{i}", group="fleet")
        spec = await signed_spec(server.db, action="restart_service", params={"name": "cron"}, group="fleet")
        task = await service.create_task(server.db, spec, actor="admin1", approval_threshold=2)
        assert task["status"] == "pending_approval"
        assert await repository.runs_of_task(server.db, task["id"]) == []
        with pytest.raises(ApiError) as same:
            await service.approve_task(server.db, task["id"], approver="admin1")
        assert same.value.code == "same_admin"
        approved = await service.approve_task(server.db, task["id"], approver="admin2", rng=random.Random(1))
        assert approved["status"] == "active" and approved["approved_by"] == "admin2"
        assert len(await repository.runs_of_task(server.db, task["id"])) == 3
