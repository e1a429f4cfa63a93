"""Task runs that overtake the connection's first ``authority.update`` wait for it (a few, briefly).

Why: a run is decided against what the device holds of the org's authority, and right after a
(re)connect that may be nothing (a fresh device) or a revocation list gone stale overnight, while
the update that fixes it is already on its way. Deciding at once refused runs the approvers had
signed. So a run that arrives before this connection's first update has been applied
(:class:`agent.authority.first_update.FirstUpdate`) waits for it — at most ``hold_s`` seconds, at
most ``max_held`` runs at once — and is then decided as usual. A run whose update never comes, or
one more than the bound, is refused with a reason that says so (and audited on the device); the
server records the refusal, and a later delivery of the same run is decided afresh.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from protocol.tasks import TaskResult, TaskRun

from .service import TaskService

if TYPE_CHECKING:
    from agent.authority.first_update import FirstUpdate

log = logging.getLogger(__name__)

NO_UPDATE = ("the server sent no authority update within {hold_s:g} s of connecting; the device cannot tell whether "
             "the signed documents and revocations it holds are current, so the run is refused (it is decided "
             "afresh if delivered again)")
TOO_MANY = ("more than {max_held} task runs arrived before this connection's first authority update; this one is "
            "refused (it is decided afresh if delivered again)")


class EarlyRuns:
    """Routes ``task.run`` to the service, holding those that overtake the first authority update."""

    def __init__(self, service: TaskService, gate: FirstUpdate) -> None:
        self.service = service
        self.gate = gate
        #: Run ids waiting for the first update now.
        self.held: set[str] = set()

    async def on_run(self, message: TaskRun) -> None:
        client = self.service.client
        connection = client.connections
        if self.gate.applied_for(connection):
            await self.service.on_run(message)
            return
        if message.run_id in self.held:
            return  # delivered again while it waits: it is decided once
        if len(self.held) >= self.gate.max_held:
            await self._refuse(message, TOO_MANY.format(max_held=self.gate.max_held))
            return
        log.info("task run waits for this connection's first authority update", extra={"run_id": message.run_id})
        self.held.add(message.run_id)
        client.spawn(self._wait(message, connection))

    async def _wait(self, message: TaskRun, connection: int) -> None:
        try:
            if await self.gate.wait(connection):
                await self.service.on_run(message)
            else:
                await self._refuse(message, NO_UPDATE.format(hold_s=self.gate.hold_s))
        finally:
            self.held.discard(message.run_id)

    async def _refuse(self, message: TaskRun, reason: str) -> None:
        log.warning("task refused", extra={"run_id": message.run_id, "reason": reason})
        authority = self.service.authority
        if authority is not None:
            authority.audit.record("task.refused", run_id=message.run_id, task_id=message.task_id,
                                   action=message.action, server_says=message.technician, reason=reason)
        result = TaskResult(run_id=message.run_id, status="refused", ended_at=time.time(), reason=reason)
        try:
            await self.service.client.send(result)
        except ConnectionError:
            log.info("offline; the refused run is decided afresh when the server delivers it again")
