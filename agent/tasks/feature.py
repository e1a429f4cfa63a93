"""Agent feature: maintenance tasks (``task.run`` / ``task.cancel`` / ``task.result.ack`` / ``task.proof``) routed to a
TaskService."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol.authority_messages import TaskProof
from protocol.tasks import TaskArtifactAck, TaskCancel, TaskResultAck, TaskRun

from .hold import EarlyRuns
from .service import TaskService

if TYPE_CHECKING:
    from agent.control_client import AgentClient


def attach(service: TaskService) -> None:
    """Route the task messages of ``service.client`` to ``service``."""
    client = service.client

    # A run that overtakes this connection's first authority update waits for it (agent/tasks/hold.py).
    early = EarlyRuns(service, service.authority.first_update) if service.authority is not None else None

    async def on_run(_client: AgentClient, message: TaskRun) -> None:
        if early is not None:
            await early.on_run(message)
        else:
            await service.on_run(message)

    async def on_ack(_client: AgentClient, message: TaskResultAck) -> None:
        await service.on_ack(message)

    async def on_artifact_ack(_client: AgentClient, message: TaskArtifactAck) -> None:
        await service.on_artifact_ack(message)

    async def on_cancel(_client: AgentClient, message: TaskCancel) -> None:
        await service.on_cancel(message)

    async def on_proof(_client: AgentClient, message: TaskProof) -> None:
        await service.on_proof(message)

    async def on_ready(_client: AgentClient) -> None:
        await service.on_ready()

    client.register(TaskRun, on_run)
    client.register(TaskResultAck, on_ack)
    client.register(TaskCancel, on_cancel)
    client.register(TaskArtifactAck, on_artifact_ack)
    client.register(TaskProof, on_proof)  # a technician's signature over a run's challenge
    client.on_ready.append(on_ready)
