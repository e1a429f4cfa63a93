"""Request → answer over a device's control channel: each tools request waits for the ``tools.result``
naming it. Only this node's connections are asked (with several nodes, the console reaches the node
holding the device through the load balancer's stickiness or gets "offline")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from protocol.tools import ToolRequest, ToolResult

from ..errors import ApiError

if TYPE_CHECKING:
    from ..agent_channel import AgentConnection
    from ..app import HelplineServer

log = logging.getLogger(__name__)

#: What an agent announces in hello when it answers tools requests (agent/tools/feature.py).
CAPABILITY = "tools"
#: A listing answers in well under a second; a stop may wait on a slow unit (systemctl's own timeout is 90 s).
LIST_TIMEOUT_S = 20.0
CHANGE_TIMEOUT_S = 120.0
#: Requests waiting for an answer, per server: a bound so a flood of API calls cannot pile up futures.
MAX_PENDING = 256


@dataclass
class ToolCalls:
    server: HelplineServer
    _pending: dict[str, tuple[str, asyncio.Future[ToolResult]]] = field(default_factory=dict)

    async def ask(self, device_id: str, request: ToolRequest, timeout_s: float) -> ToolResult:
        """Send ``request`` to the device and wait for its answer; ApiError 409/503/504 when that cannot be."""
        conn = self.server.connections.get(device_id)
        if conn is None or conn.hello is None:
            raise ApiError(409, "device_offline", "the device is not connected")
        if CAPABILITY not in conn.hello.capabilities:
            raise ApiError(409, "not_supported", "the device's agent does not offer processes and services")
        if len(self._pending) >= MAX_PENDING:
            raise ApiError(503, "busy", "too many tools requests are waiting for devices")
        future: asyncio.Future[ToolResult] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = (device_id, future)
        try:
            await conn.send(request)
            return await asyncio.wait_for(future, timeout_s)
        except (ConnectionError, RuntimeError) as exc:
            raise ApiError(409, "device_offline", f"the device's connection dropped: {exc}") from exc
        except TimeoutError as exc:
            raise ApiError(504, "device_timeout", f"the device did not answer within {timeout_s:g} s") from exc
        finally:
            self._pending.pop(request.id, None)
            if not future.done():
                future.cancel()

    async def on_result(self, conn: AgentConnection, result: ToolResult) -> None:
        """An answer counts only from the device that was asked (another device cannot answer for it)."""
        waiting = self._pending.get(result.in_reply_to)
        if waiting is None or waiting[0] != conn.device_id:
            log.info("tools result for no pending request", extra={"device_id": conn.device_id,
                                                                   "in_reply_to": result.in_reply_to})
            return
        with contextlib.suppress(asyncio.InvalidStateError):
            waiting[1].set_result(result)
