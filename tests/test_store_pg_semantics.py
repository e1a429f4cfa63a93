"""Store behaviour that differs between SQLite and PostgreSQL unless the code takes care: events
committed out of seq order, NUL in text, concurrent transactions (several server nodes on one
PostgreSQL), LIKE case. Each test runs on both engines (PostgreSQL: a fresh schema per test)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from protocol.tasks import TaskResult
from server import audit, devices, events
from server.errors import ApiError
from server.store import Database
from server.tasks import lifecycle, repository, service
from server.tasks.spec import TaskSpec
from tests.conftest import add_device
from tests.tasks_helpers import signed_spec


async def spec(db: Database, device: str, **extra: Any) -> TaskSpec:
    """A script task with its (stored) approver-signed authorization."""
    return await signed_spec(db, action="script", script="echo hi", device=device, **extra)


async def test_event_committed_after_a_later_seq_is_still_delivered(db: Database) -> None:
    """An event whose transaction commits after a higher-numbered one was read is not skipped."""
    if db.dialect == "sqlite":
        pytest.skip("SQLite writers are serialized: seqs always commit in order")
    watcher = events.EventWatcher(db)
    seen: list[str] = []

    async def record(subject: str, _payload: dict[str, Any]) -> None:
        seen.append(subject)

    watcher.on("probe", record)
    await watcher.start_from_now()
    slow = db.transaction()
    tx = await slow.__aenter__()
    try:
        await events.publish_in(tx, "probe", "first")  # takes the lower seq, commits last
        async with db.transaction() as fast:
            await events.publish_in(fast, "probe", "second")
        await watcher.poll_once()
        assert seen == ["second"]
    finally:
        await slow.__aexit__(None, None, None)
    await watcher.poll_once()
    assert seen == ["second", "first"]
    await watcher.poll_once()
    assert seen == ["second", "first"]


async def test_event_uncommitted_at_watcher_start_is_still_delivered(db: Database) -> None:
    """An event whose transaction was open when the watcher started (below the max seq) is delivered once
    it commits; events committed before the start are not replayed."""
    old_tx = db.transaction()
    async with db.transaction() as tx:
        await events.publish_in(tx, "probe", "before-start")
    seen: list[str] = []

    async def record(subject: str, _payload: dict[str, Any]) -> None:
        seen.append(subject)

    watcher = events.EventWatcher(db)
    watcher.on("probe", record)
    if db.dialect == "sqlite":
        await watcher.start_from_now()
        assert await watcher.poll_once() == 0 and seen == []
        return
    tx = await old_tx.__aenter__()
    try:
        await events.publish_in(tx, "probe", "in-flight")  # takes the lower seq, commits after the start
        async with db.transaction() as fast:
            await events.publish_in(fast, "probe", "committed-first")
        await watcher.start_from_now()
        await watcher.poll_once()
        assert seen == []
    finally:
        await old_tx.__aexit__(None, None, None)
    await watcher.poll_once()
    assert seen == ["in-flight"]
    await watcher.poll_once()
    assert seen == ["in-flight"]


async def test_nul_in_text_is_stored_and_audit_chain_still_verifies(db: Database) -> None:
    """Text with NUL (task output, login names) is stored on both engines; the audit chain still verifies."""
    device = await add_device(db)
    await devices.set_hostname(db, device, "pc\x00evil")
    row = await devices.get(db, device)
    assert row is not None and row["hostname"].startswith("pc") and row["hostname"].endswith("evil")
    await audit.append(db, "bad\x00name", "auth.login_failed", "", {"peer": "x\x00y"})
    assert (await audit.verify_chain(db)).ok
    task = await service.create_task(db, await spec(db, device), actor="admin1")
    (run,) = await repository.runs_of_task(db, task["id"])
    stored = await lifecycle.record_result(db, device, TaskResult(
        run_id=run["id"], status="succeeded", ended_at=time.time(), exit_code=0, stdout="a\x00b"))
    assert stored is not None and stored["status"] == "succeeded" and len(stored["stdout"]) == 3


async def test_concurrent_approvals_materialize_runs_once(db: Database) -> None:
    """Two admins approving the same large task at once: one wins, the runs exist once."""
    device = await add_device(db)
    task = await service.create_task(db, await spec(db, device), actor="admin1", approval_threshold=0)
    assert task["status"] == "pending_approval"
    results = await asyncio.gather(service.approve_task(db, task["id"], approver="admin2"),
                                   service.approve_task(db, task["id"], approver="admin3"), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], ApiError) and errors[0].code == "not_pending"
    assert len(await repository.runs_of_task(db, task["id"])) == 1
    approvals = await audit.recent(db, action="task.approve")
    assert len(approvals) == 1


async def test_concurrent_schedulers_fire_an_occurrence_once(db: Database) -> None:
    """Two schedulers (server nodes sharing the database) firing the same cron occurrence queue one run."""
    device = await add_device(db)
    t0 = time.time()
    task = await service.create_task(db, await spec(db, device, cron="* * * * *"), actor="admin1", now=t0)
    later = t0 + 3600
    created = await asyncio.gather(lifecycle.fire_schedules(db, later, random.Random(1)),
                                   lifecycle.fire_schedules(db, later, random.Random(2)))
    assert sum(created) == 1
    assert len(await repository.runs_of_task(db, task["id"])) == 1


async def test_a_result_delivered_twice_at_once_is_recorded_once(db: Database) -> None:
    """The same result arriving twice concurrently is stored and audited once."""
    device = await add_device(db)
    task = await service.create_task(db, await spec(db, device), actor="admin1")
    (run,) = await repository.runs_of_task(db, task["id"])
    result = TaskResult(run_id=run["id"], status="failed", ended_at=time.time(), exit_code=3)
    rows = await asyncio.gather(lifecycle.record_result(db, device, result),
                                lifecycle.record_result(db, device, result))
    assert all(r is not None and r["status"] == "failed" for r in rows)
    assert len(await audit.recent(db, action="task.result")) == 1


async def test_concurrent_revocations_are_audited_once(db: Database) -> None:
    """Revoking a device twice at once: one revocation, one audit record, one event."""
    device = await add_device(db)
    revoked = await asyncio.gather(devices.revoke(db, device, actor="a"), devices.revoke(db, device, actor="b"))
    assert sorted(revoked) == [False, True]
    assert len(await audit.recent(db, action="device.revoke")) == 1


async def test_audit_action_filter_ignores_case(db: Database) -> None:
    """The audit action filter matches regardless of case on both engines (PostgreSQL's LIKE does not)."""
    await audit.append(db, "admin", "task.create", "t1")
    await audit.append(db, "admin", "grant.create", "g1")
    assert [r["target"] for r in await audit.recent(db, action="TASK.*")] == ["t1"]


async def test_concurrent_login_failures_all_count(db: Database) -> None:
    """Failed logins arriving at once each count: the fifth locks the account on both engines."""
    from server.accounts import login, users

    async with db.transaction() as tx:
        await users.create_user(tx, "wes", "technician", "not-a-real-hash", None)
    row = await users.get_row(db, username="wes")
    assert row is not None
    service = login.LoginService(db)
    await asyncio.gather(*(service._failure(row, "wes", f"10.0.0.{i}", "bad_password")
                           for i in range(login.MAX_FAILURES)))
    fresh = await users.get_row(db, username="wes")
    assert fresh is not None and fresh["locked_until"] is not None and fresh["failed_logins"] == 0
    assert len(await audit.recent(db, action="auth.locked")) == 1
