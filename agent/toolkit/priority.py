"""A tunnel writer that puts file chunks last, shared by the agent's toolkit and the reference viewer.

Whatever is queued in front of a screen ack or a keystroke delays it by the time those bytes
take to cross the tunnel; file chunks are the only big messages that are not urgent. So a chunk
is written only when no other message waits for the tunnel, and the sender of chunks keeps its
bytes in flight bounded by the receiver's acks (the transfer's window).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class PrioritySender:
    """One tunnel's writer: ``send`` goes first; ``send_bulk`` (file chunks) only while nothing else waits."""

    def __init__(self, send: Callable[[str | bytes], Awaitable[None]]) -> None:
        self._send = send
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def send(self, data: str | bytes, /) -> None:
        self._waiting += 1
        self._idle.clear()
        try:
            async with self._lock:
                await self._send(data)
        finally:
            self._waiting -= 1
            if not self._waiting:
                self._idle.set()

    async def send_bulk(self, data: str | bytes, /) -> None:
        while True:
            await self._idle.wait()
            async with self._lock:
                if self._waiting:
                    continue  # an interactive message came while this one waited for the lock: it goes first
                await self._send(data)
                return
