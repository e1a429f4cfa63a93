"""Tasks in the console (Chromium): runs and output of a real agent on the device's Tasks tab, the task
pages, creating a task from the form, rollout waves, no task buttons without RUN_TASKS, Cancel only
while something is left to stop, Resume of a paused schedule (admins), expired bundles."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from playwright.async_api import expect

from agent.runtime import Agent
from server import devices
from server.auth.rights import Right
from server.tasks import repository, service
from server.tasks.feature import SCHEDULER
from server.tasks.status import FINAL
from tests.conftest import add_device
from tests.harness import enroll_agent, running_server, wait_until
from tests.tasks_helpers import authorize, make_org, signed_spec, store, submit, task_agent
from tests.test_accounts_support import client, login, make_user
from tests.test_console_support import console_browser


async def _final_runs(server, task_id: str) -> bool:  # type: ignore[no-untyped-def]
    runs = await repository.runs_of_task(server.db, task_id)
    return bool(runs) and all(r["status"] in FINAL for r in runs)


async def test_task_from_the_api_shows_runs_and_output_after_a_real_agent_ran_it(tmp_path: Path) -> None:
    """A clear_temp task created through the API runs on a real agent; its state, exit code and stdout appear on
    the device's Tasks tab, the Tasks list and the task page; a task made with the console form runs too."""
    junk = tmp_path / "junk"
    junk.mkdir()
    old = junk / "old.log"
    old.write_bytes(b"x" * 1234)
    os.utime(old, (time.time() - 3 * 86400,) * 2)

    def setup(agent: Agent) -> None:
        service = agent.tasks
        service.poll_s = 0.05
        service.temp_targets = {"tmp": [junk]}

    org = make_org()
    async with running_server(tmp_path / "srv") as server:
        server.console_app[SCHEDULER].tick_s = 0.1
        tech = await make_user(server, "tina", "technician", groups={"lab": None})
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        for task_id, params in (("nightly-clean", {"targets": ["tmp"], "older_than_days": 1}),
                                ("dry-clean", {"targets": ["tmp"], "dry_run": True})):
            await store(server.db, authorize(org, devices=[state.device_id], action="clear_temp", params=params,
                                             task_id=task_id))
        async with task_agent(server, state, org, setup=setup) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            async with client(server) as http:
                auth = await login(http, tech)
                csrf = {"X-CSRF-Token": auth.csrf}
                async with http.post("/api/v1/tasks", headers=csrf, json={
                        "device": state.device_id, "document_id": "nightly-clean"}) as resp:
                    assert resp.status == 201, await resp.text()
                    task_id = (await resp.json())["task"]["id"]
            await wait_until(lambda: _final_runs(server, task_id), timeout=20, what="the agent's result")
            assert not old.exists()

            async with console_browser(server) as console:
                page = console.page
                await console.login(tech, code=tech.code(1))
                await page.goto(f"{console.base}/#/devices/{state.device_id}/tasks")
                row = page.locator("#device-task-runs tr[data-status=succeeded]")
                await expect(row).to_have_count(1, timeout=15_000)
                await expect(row.locator("td.exit-code")).to_have_text("0")
                await row.locator("details.output summary").click()
                await expect(row.locator("pre.stdout")).to_contain_text("tmp: 1 files, 1234 bytes, 0 errors")
                await expect(row.locator("td.reason")).to_have_text("freed 1234 bytes")

                # A second task from the console's own form (dry run: touches nothing).
                await page.click("#new-task")
                await page.fill("#task-document", "dry-clean")
                await page.click("#task-submit")
                await expect(page.locator("#device-task-runs tr[data-run]")).to_have_count(2, timeout=10_000)
                created = await server.db.fetchall("SELECT id, params FROM tasks WHERE id != ?", (task_id,))
                assert len(created) == 1 and '"dry_run": true' in created[0]["params"]
                await wait_until(lambda: _final_runs(server, created[0]["id"]), timeout=20, what="the form's task")
                await page.click("#refresh-tasks")
                await expect(page.locator("#device-task-runs tr[data-status=succeeded]")).to_have_count(2)

                await page.goto(f"{console.base}/#/tasks")
                await expect(page.locator(f"#task-rows tr[data-task={task_id}]")).to_contain_text("clear_temp")
                await expect(page.locator(f"#task-rows tr[data-task={task_id}] td.next-run")).to_have_text("done")
                await page.fill("#task-search", "nothing-matches-this")
                await expect(page.locator("#task-rows")).to_contain_text("No task matches.")
                await page.fill("#task-search", "")
                await console.shot("tasks")
                await page.click(f"#task-rows tr[data-task={task_id}] a")
                await expect(page.locator("#task-runs tr[data-status=succeeded]")).to_have_count(1, timeout=10_000)
                await page.locator("#task-runs details.output summary").click()
                await expect(page.locator("#task-runs pre.stdout")).to_contain_text("1234 bytes")
                await expect(page.locator("#task-detail .page-head .badge")).to_have_text("completed")
                assert await page.locator("#task-cancel").count() == 0  # nothing left to cancel
                await console.shot("task-detail")
                assert console.csp_violations() == []
                assert not [e for e in console.errors if e.startswith("pageerror")]


async def test_no_task_buttons_without_run_tasks_and_rollout_waves_are_shown(tmp_path: Path) -> None:
    """A technician without RUN_TASKS sees no create button (and the API refuses); an admin sees a group
    rollout's waves, and approves a task waiting for a second admin."""
    async with running_server(tmp_path / "srv") as server:
        nora = await make_user(server, "nora", "technician", groups={"lab": Right.VIEW_INVENTORY | Right.REMOTE_VIEW})
        root = await make_user(server, "root", "admin")
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        now = time.time()
        await server.db.executemany(
            "INSERT INTO devices (id, group_name, hostname, cert_serial, cert_not_after, enrolled_at, last_seen, online)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(f"dev-{i}", "lab", f"ws-{i}", f"s{i}", now + 86400, now, now, False) for i in range(3)])
        await devices.ensure_group(server.db, "lab")
        org = make_org()
        dry_run = {"targets": ["tmp"], "dry_run": True}
        task = await submit(server, authorize(org, groups=["lab"], action="clear_temp", params=dry_run), group="lab",
                            wave_percent=25)
        big = await service.create_task(server.db, await signed_spec(
            server.db, action="clear_temp", params=dry_run, group="lab"), actor="admin1", approval_threshold=2)
        assert big["status"] == "pending_approval"
        async with client(server) as http:
            auth = await login(http, nora)
            async with http.post("/api/v1/tasks", headers={"X-CSRF-Token": auth.csrf}, json={
                    "device": state.device_id, "document_id": "task-x"}) as resp:
                assert resp.status == 403
        async with console_browser(server) as console:
            page = console.page
            await console.login(nora, code=nora.code(1))
            await page.goto(f"{console.base}/#/devices/{state.device_id}/tasks")
            await expect(page.locator("#no-task-rights")).to_be_visible(timeout=15_000)
            assert await page.locator("#new-task").count() == 0
            assert await page.locator("#nav a[href='#/tasks']").count() == 0
            await page.goto(f"{console.base}/#/tasks")
            await expect(page.locator("#no-task-rights")).to_be_visible()
            assert await page.locator("#new-task, #task-submit").count() == 0

            await console.context.clear_cookies()
            await page.goto("about:blank")  # a fresh page: nothing of nora's login stays in memory
            await console.login(root)
            await page.goto(f"{console.base}/#/tasks/{task['id']}")
            card = page.locator("section.rollout")
            await expect(card).to_contain_text("1 of 4 released", timeout=15_000)
            await expect(card).to_contain_text("stops above 20 %")
            await expect(page.locator("#task-runs tr[data-run]")).to_have_count(4)
            assert await page.locator("#new-task").count() == 0  # the form lives on the list and device pages
            await page.goto(f"{console.base}/#/tasks/{big['id']}")
            await expect(page.locator("#task-detail")).to_contain_text("second admin", timeout=15_000)
            await page.click("#task-approve")
            await expect(page.locator("#task-detail .page-head .badge")).to_have_text("active")
            approved = await repository.get_task(server.db, big["id"])
            assert approved is not None and approved["approved_by"] == "root"
            assert console.csp_violations() == []


async def test_cancel_only_while_open_and_admins_resume_a_paused_schedule(tmp_path: Path) -> None:
    """A finished one-off task shows no Cancel (and its expired bundle says so); a paused schedule shows why,
    keeps Cancel, offers Resume only to an admin, and Resume makes it active again (audited)."""
    async with running_server(tmp_path / "srv") as server:
        tina = await make_user(server, "tina", "technician", groups={"lab": Right.RUN_TASKS | Right.VIEW_INVENTORY})
        root = await make_user(server, "root", "admin")
        device = await add_device(server.db, "dev-1", "lab")
        org = make_org()
        done = await submit(server, authorize(org, groups=["lab"], action="diagnostics", params={"log_lines": 0}),
                            device=device)
        expired = {"artifact": {"stored": False, "expired": True, "expired_at": time.time(), "retention_days": 30,
                                "size": 2048, "sha256": "ab" * 32, "stored_at": time.time() - 31 * 86400}}
        await server.db.execute("UPDATE task_runs SET status = 'succeeded', exit_code = 0, ended_at = ?, details = ?"
                                " WHERE task_id = ?", (time.time(), json.dumps(expired), done["id"]))
        nightly = await submit(server, authorize(org, groups=["lab"], action="updates", params={"mode": "apply"},
                                                 schedule="0 2 * * *"), group="lab", wave_percent=50)
        await server.db.execute("UPDATE tasks SET status = 'paused' WHERE id = ?", (nightly["id"],))
        async with console_browser(server) as console:
            page = console.page
            await console.login(tina, code=tina.code(1))
            await page.goto(f"{console.base}/#/tasks/{done['id']}")
            await expect(page.locator("#task-detail .page-head .badge")).to_have_text("completed", timeout=15_000)
            assert await page.locator("#task-cancel").count() == 0
            await expect(page.locator("#task-runs .artifact-expired")).to_contain_text("30-day retention")
            assert await page.locator("#task-runs a.artifact-link").count() == 0
            await page.goto(f"{console.base}/#/tasks/{nightly['id']}")
            await expect(page.locator("#task-paused")).to_contain_text("failure rate passed the threshold",
                                                                       timeout=15_000)
            await expect(page.locator("#task-cancel")).to_be_visible()
            assert await page.locator("#task-resume").count() == 0  # resuming needs ADMINISTER

            await console.context.clear_cookies()
            await page.goto("about:blank")
            await console.login(root)
            await page.goto(f"{console.base}/#/tasks/{nightly['id']}")
            await page.locator("#task-resume").click(timeout=15_000)
            await expect(page.locator("#task-detail .page-head .badge")).to_have_text("active")
            assert await page.locator("#task-paused").count() == 0
            row = await repository.get_task(server.db, nightly["id"])
            assert row is not None and row["status"] == "active"
            resumed = await server.db.fetchall("SELECT actor FROM audit_log WHERE action = 'task.resume'")
            assert [r["actor"] for r in resumed] == ["root"]
            assert console.csp_violations() == []
            assert not [e for e in console.errors if e.startswith("pageerror")]
