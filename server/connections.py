"""Live agent control channels on this node, by device id."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from protocol.control import CloseCode

if TYPE_CHECKING:
    from .agent_channel import AgentConnection

log = logging.getLogger(__name__)


class ConnectionRegistry:
    def __init__(self) -> None:
        self._by_device: dict[str, AgentConnection] = {}
        self.changed = asyncio.Event()

    def add(self, conn: AgentConnection) -> AgentConnection | None:
        """Register; return the connection it supersedes (same device), if any."""
        old = self._by_device.get(conn.device_id)
        self._by_device[conn.device_id] = conn
        self._notify()
        return old

    def remove(self, conn: AgentConnection) -> None:
        if self._by_device.get(conn.device_id) is conn:
            del self._by_device[conn.device_id]
            self._notify()

    def get(self, device_id: str) -> AgentConnection | None:
        return self._by_device.get(device_id)

    def device_ids(self) -> list[str]:
        return list(self._by_device)

    def __len__(self) -> int:
        return len(self._by_device)

    async def close(self, device_id: str, code: CloseCode, reason: str) -> bool:
        conn = self._by_device.get(device_id)
        if conn is None:
            return False
        await conn.close(code, reason)
        return True

    async def close_all(self, code: CloseCode, reason: str) -> None:
        await asyncio.gather(*(c.close(code, reason) for c in list(self._by_device.values())), return_exceptions=True)

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()
