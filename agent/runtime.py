"""Assemble the agent: control client plus feature modules (inventory, sessions, tasks)."""

from __future__ import annotations

import importlib
import logging

from common.signals import stop_on_signals

from .config import AgentConfig
from .control_client import AgentClient, AgentRevoked
from .state import AgentState

log = logging.getLogger(__name__)

#: Feature modules, each with ``setup(client: AgentClient) -> None``.
FEATURES: list[str] = [
    "agent.sessions",
    "agent.reporting",
    "agent.tasks.feature",
]

EXIT_REVOKED = 3


def build_client(state: AgentState, config: AgentConfig) -> AgentClient:
    client = AgentClient(state, config)
    for name in FEATURES:
        importlib.import_module(name).setup(client)
    return client


async def run_agent(state: AgentState, config: AgentConfig) -> int:
    client = build_client(state, config)
    stop = stop_on_signals()
    try:
        await client.run(stop)
    except AgentRevoked as exc:
        log.error("device revoked; the agent stops", extra={"reason": str(exc)})
        print(f"helpline: {exc}. Re-enroll this device to use it again.")
        return EXIT_REVOKED
    return 0
