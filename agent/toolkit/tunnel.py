"""The seam between the screen session and the toolkit: a tunnel that keeps toolkit messages for itself.

The screen session reads its tunnel through :class:`ToolkitTunnel`, which hands every toolkit
message (chunks by their magic byte, text the toolkit decoder accepts) to the
:class:`~agent.toolkit.session.Toolkit` and returns only the rest, so the screen code needs no
change and never sees a file byte. Both write to the same tunnel under one lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from protocol import toolkit as tk

from ..consent.guard import PromptGuard
from ..screen.tunnel import Tunnel
from .caps import ToolkitCaps
from .session import Approve, DeviceSide, Toolkit


class ToolkitTunnel:
    """``tunnel`` minus the toolkit's messages, which ``toolkit`` answers."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.inner = tunnel
        self._lock = asyncio.Lock()
        self.toolkit: Toolkit | None = None

    async def send(self, data: str | bytes, /) -> None:
        async with self._lock:
            await self.inner.send(data)

    async def _send_bytes(self, data: bytes) -> None:
        await self.send(data)

    async def _send_text(self, data: str) -> None:
        await self.send(data)

    async def recv(self) -> str | bytes:
        while True:
            data = await self.inner.recv()
            toolkit = self.toolkit
            if toolkit is None:
                return data
            if isinstance(data, (bytes, bytearray, memoryview)):
                if tk.is_chunk(data):
                    await toolkit.on_binary(bytes(data))
                    continue
                return data
            try:
                message = tk.decode_text(data)
            except tk.ToolkitProtocolError:
                return data  # the screen session's (or garbage it answers itself)
            if not await toolkit.on_text(message):
                return data  # an agent → viewer kind: the screen session answers it as invalid


#: How long the device user has to answer a file request (no answer = Deny).
APPROVE_TIMEOUT_S = 60.0


def _asking(device: DeviceSide, gate: PromptGuard | None, timeout_s: float = APPROVE_TIMEOUT_S) -> Approve:
    """Ask the person at the device about a fetch, with the technician's remote input suspended meanwhile."""

    async def approve(path: str) -> bool:
        with gate.showing() if gate is not None else contextlib.nullcontext():
            return await device.approve_fetch(path, timeout_s)

    return approve


@contextlib.asynccontextmanager
async def toolkit_tunnel(tunnel: Tunnel, caps: ToolkitCaps | None, *, technician: str = "",
                         folder: Path | None = None, home: Path | None = None, approve: Approve | None = None,
                         device: DeviceSide | None = None, gate: PromptGuard | None = None,
                         approve_timeout_s: float = APPROVE_TIMEOUT_S) -> AsyncIterator[Tunnel]:
    """``tunnel`` with the toolkit of ``caps`` on it (None: the tunnel as it is), closed on exit; ``device`` is
    the indicator with its chat window (None: nobody at the device sees the toolkit)."""
    if caps is None:
        yield tunnel
        return
    wrapped = ToolkitTunnel(tunnel)
    if approve is None and device is not None:
        approve = _asking(device, gate)
    toolkit = Toolkit(caps, wrapped._send_text, wrapped._send_bytes, technician=technician, folder=folder,
                      home=home, approve=approve, device=device)
    wrapped.toolkit = toolkit
    watchers = [asyncio.ensure_future(toolkit.user_chat()), asyncio.ensure_future(toolkit.device_clipboard())] \
        if device is not None else []
    try:
        await toolkit.start()
        yield wrapped
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        if device is not None:
            with contextlib.suppress(OSError, RuntimeError):
                await device.watch_clipboard(False)
        await toolkit.close()
