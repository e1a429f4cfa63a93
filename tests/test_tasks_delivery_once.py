"""A run delivered twice at once (the reconnect flush and the live send racing) is handled once.

CI once saw a device record a fourth ``task.refused`` for three deliveries: the agent's duplicate
check read its ledger, yielded to a thread, and both deliveries found the run unknown. The ledger's
insert is now the check, and a run starts at most once per agent process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.tasks.service import TaskService
from protocol.tasks import TaskResult, TaskRun


class _Client:
    """The two things the task service uses of the agent's client: its state directory and ``send``."""

    def __init__(self, directory: Path) -> None:
        self.state = SimpleNamespace(directory=directory)
        self.config = SimpleNamespace(unattended_proof_timeout_s=5.0)
        self.sent: list[Any] = []

    async def send(self, message: Any) -> None:
        self.sent.append(message)


async def _settle(service: TaskService) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while service.active_runs():
        assert asyncio.get_running_loop().time() < deadline, "runs still active"
        await asyncio.sleep(0.01)


async def test_a_run_delivered_twice_concurrently_is_processed_once(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Refused once, one result. A delivery that looks the run up after the first one has finished gets the
    stored result sent again (a redelivery after a reconnect needs it), the same message, never a second run."""
    client = _Client(tmp_path)
    service = TaskService(client)  # type: ignore[arg-type]
    run = TaskRun(task_id="t_1", run_id="r_1", action="diagnostics", technician="alice")
    with caplog.at_level(logging.WARNING, logger="agent.tasks.service"):
        await asyncio.gather(service.on_run(run), service.on_run(run), service.on_run(run))
        await _settle(service)
    assert [r.getMessage() for r in caplog.records].count("task refused") == 1
    results = [m for m in client.sent if isinstance(m, TaskResult)]
    assert results and all(m == results[0] for m in results), results  # copies of the one stored result
    assert results[0].status == "refused" and "approver-signed" in results[0].reason


async def test_resume_does_not_restart_a_run_this_process_already_handled(tmp_path: Path) -> None:
    """The resume after (re)connecting reads the ledger in a thread; a run that started and ended meanwhile
    must not be started again from that stale read."""
    client = _Client(tmp_path)
    service = TaskService(client)  # type: ignore[arg-type]
    read_unfinished = service.ledger.unfinished

    def stale_read() -> list[Any]:
        rows = read_unfinished()  # still says "waiting" for the run...
        deadline = time.monotonic() + 10
        while service.active_runs() or service.ledger.get("r_2").state != "done":  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the run did not end"
            time.sleep(0.01)
        return rows  # ...which has ended by the time the resume looks at the rows

    service.ledger.unfinished = stale_read  # type: ignore[method-assign]
    await service.on_run(TaskRun(task_id="t_1", run_id="r_2", action="diagnostics", technician="alice"))
    await service._resume()
    await _settle(service)
    finished = {m.ended_at for m in client.sent if isinstance(m, TaskResult)}
    assert len(finished) == 1, client.sent
