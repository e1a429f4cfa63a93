"""Server feature: maintenance tasks — agent handlers, the scheduler loop, the REST API.

:func:`setup` builds the feature's two long-lived objects — the :class:`TaskScheduler` and the
:class:`~server.tasks.artifacts.ArtifactReceiver` — hands them to the handlers and routes that
use them, and keeps them under :data:`SCHEDULER` and :data:`ARTIFACTS` on the console app for
whoever needs them later (tests speed up the tick or lower the artifact size limit there).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from protocol.authority import SignedDocument
from protocol.authority_messages import TaskChallenge
from protocol.tasks import (
    TaskArtifactBegin,
    TaskArtifactChunk,
    TaskCancel,
    TaskResult,
    TaskResultAck,
    TaskWaiting,
)
from server.storage.keys import legacy_sealer, sealing_key_of, storage_key_of

from ..api import add_routes
from ..api.openapi import add_schemas
from ..authority import repository as documents
from ..store import Row, StoreUnavailable
from ..ticker import tick_forever
from ..wake import waker as wake
from . import api, lifecycle, proofs, repository
from .artifacts import ArtifactReceiver
from .openapi import SCHEMAS
from .service import TASK_CANCELLED, TASK_CHANGED
from .status import RunStatus, TaskStatus
from .views import task_run_message

if TYPE_CHECKING:
    from ..agent_channel import AgentConnection
    from ..app import HelplineServer

log = logging.getLogger(__name__)


@dataclass
class TaskScheduler:
    """Delivers due runs to connected agents and moves runs through their lifecycle."""

    server: HelplineServer
    #: Where run artifacts are stored; the tick sweeps them against the retention period.
    artifacts: ArtifactReceiver
    tick_s: float = 1.0
    rng: random.Random = field(default_factory=random.Random)
    clock: Any = time.time
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: How often stored artifacts are checked against the retention period.
    artifact_sweep_s: float = 3600.0
    #: Steps that act ahead of runs' windows, given the tick's time (waking sleeping devices: server/wake).
    upcoming: list[Callable[[float], Awaitable[object]]] = field(default_factory=list)
    _last_sweep: float = float("-inf")

    async def deliver(self, conn: AgentConnection, *, resend: bool = False) -> int:
        db, now, sent = self.server.db, self.clock(), 0
        signed: dict[str, SignedDocument | None] = {}
        if resend:
            for task, run in await lifecycle.delivered_runs(db, conn.device_id):
                if task["status"] == TaskStatus.CANCELLED:
                    await conn.send(TaskCancel(run_id=run["id"], reason="task cancelled"))
                else:
                    await conn.send(task_run_message(task, run, await self._authorization(task, signed)))
        for task, run in await lifecycle.due_runs(db, conn.device_id, now):
            await conn.send(task_run_message(task, run, await self._authorization(task, signed)))
            await lifecycle.mark_sent(db, run["id"], now)
            sent += 1
        return sent

    async def _authorization(self, task: Row, cache: dict[str, SignedDocument | None]) -> SignedDocument | None:
        """The task's signed document with the approvals gathered so far (None: the run goes without one and
        the agent refuses it, saying so)."""
        doc_id = task["document_id"]
        if not doc_id:
            return None
        if doc_id not in cache:
            row = await documents.get_document(self.server.db, doc_id)
            cache[doc_id] = documents.signed_of(row) if row is not None else None
        return cache[doc_id]

    async def tick(self) -> None:
        """One pass; each step stands alone, so a failing one still lets due runs go out."""
        db, now = self.server.db, self.clock()
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("fire schedules", lambda: lifecycle.fire_schedules(db, now, self.rng)),
            ("expire undelivered runs", lambda: lifecycle.expire_undelivered(db, now, self.rng)),
            ("advance rollouts", lambda: lifecycle.advance_rollouts(db, now))]
        steps += [("act ahead of windows", functools.partial(step, now)) for step in self.upcoming]
        if now - self._last_sweep >= self.artifact_sweep_s:
            self._last_sweep = now
            steps.append(("expire artifacts", lambda: self.artifacts.expire(
                self.server.config.task_artifact_retention_days, now)))
        for name, step in steps:
            try:
                await step()
            except StoreUnavailable:
                raise  # no step can work: the tick fails once, logged once per outage by run()
            except Exception:
                log.exception("task scheduler step %r failed; delivering due runs anyway", name)
        for device_id in await lifecycle.due_device_ids(db, now):
            conn = self.server.connections.get(device_id)
            if conn is not None:
                try:
                    await self.deliver(conn)
                except (ConnectionError, RuntimeError) as exc:
                    log.warning("could not deliver tasks", extra={"device_id": device_id, "error": str(exc)})

    async def run(self) -> None:
        await tick_forever(self.tick, wake=self.wake, tick_s=lambda: self.tick_s, activity="task scheduler tick",
                           logger=log)


#: The server's task scheduler (on the console app).
SCHEDULER: web.AppKey[TaskScheduler] = web.AppKey("helpline_task_scheduler", TaskScheduler)
#: Where run artifacts are received and stored (on the console app).
ARTIFACTS: web.AppKey[ArtifactReceiver] = web.AppKey("helpline_task_artifacts", ArtifactReceiver)


def setup(server: HelplineServer) -> None:
    receiver = ArtifactReceiver(lambda: server.db, server.config.data_dir / "artifacts",
                                server.config.task_artifact_max_bytes, seal_key=sealing_key_of(server.config),
                                read_key=storage_key_of(server.config))
    scheduler = TaskScheduler(server, receiver)
    scheduler.upcoming.append(wake.setup(server).tick)
    server.console_app[SCHEDULER] = scheduler
    server.console_app[ARTIFACTS] = receiver
    if receiver.seal_key is not None:
        server.console_app.on_startup.append(legacy_sealer(receiver.directory, (".tar.gz",), receiver.seal_key,
                                                           "task artifacts"))

    async def on_result(conn: AgentConnection, message: TaskResult) -> None:
        run = await lifecycle.record_result(server.db, conn.device_id, message)
        await conn.send(TaskResultAck(run_id=message.run_id))
        if run is not None and run["rollout_id"]:
            scheduler.wake.set()

    async def on_artifact_begin(conn: AgentConnection, message: TaskArtifactBegin) -> None:
        await conn.send(await receiver.begin(conn.device_id, message))

    async def on_artifact_chunk(conn: AgentConnection, message: TaskArtifactChunk) -> None:
        await conn.send(await receiver.chunk(conn.device_id, message))

    async def on_waiting(conn: AgentConnection, message: TaskWaiting) -> None:
        await lifecycle.mark_waiting(server.db, conn.device_id, message.run_id, message.reason)

    async def on_ready(conn: AgentConnection) -> None:
        await scheduler.deliver(conn, resend=True)

    async def on_challenge(conn: AgentConnection, message: TaskChallenge) -> None:
        await proofs.on_challenge(server.db, conn, message)

    async def on_changed(_task_id: str, _payload: dict[str, Any]) -> None:
        scheduler.wake.set()

    async def on_cancelled(task_id: str, _payload: dict[str, Any]) -> None:
        runs = await repository.runs_of_task(server.db, task_id)
        sends = []
        for run in runs:
            conn = server.connections.get(run["device_id"])
            if run["status"] in (RunStatus.SENT, RunStatus.WAITING) and conn is not None:
                sends.append(conn.send(TaskCancel(run_id=run["id"], reason=f"task {task_id} cancelled")))
        # At once, not device after device: one that takes no data (cut off after the channel's stall
        # limit) must not hold the others' cancels, nor the event watcher, for long.
        for failed in await asyncio.gather(*sends, return_exceptions=True):
            if isinstance(failed, Exception):
                log.warning("could not send a task cancel", extra={"task_id": task_id, "error": str(failed)})
        log.info("task cancelled", extra={"task_id": task_id, "runs": len(runs)})

    server.agent_handlers.register(TaskResult, on_result)
    server.agent_handlers.register(TaskWaiting, on_waiting)
    server.agent_handlers.register(TaskChallenge, on_challenge)
    server.agent_handlers.register(TaskArtifactBegin, on_artifact_begin)
    server.agent_handlers.register(TaskArtifactChunk, on_artifact_chunk)
    server.on_agent_ready.append(on_ready)
    server.background.append(scheduler.run)
    server.background.append(lambda: _subscribe(server, on_changed, on_cancelled))
    add_routes(server.console_app, api.routes(receiver, approval_threshold=server.config.task_approval_threshold,
                                              relay=lambda *a: proofs.relay_proof(server, *a)))
    add_schemas(server.console_app, SCHEMAS)


async def _subscribe(server: HelplineServer, on_changed: Any, on_cancelled: Any) -> None:
    """The event watcher exists only once the server started; hook in then."""
    if server.watcher is not None:
        server.watcher.on(TASK_CHANGED, on_changed)
        server.watcher.on(TASK_CANCELLED, on_cancelled)
        server.watcher.on(proofs.TASK_PROOF, proofs.on_proof_event(server))
