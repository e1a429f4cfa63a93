"""A tunnel writer that puts file chunks last, shared by the agent's toolkit and the reference viewer.

Whatever is queued in front of a screen ack or a keystroke delays it by the time those bytes
take to cross the tunnel; file chunks are the only big messages that are not urgent. So a chunk
is written only when no other message waits for the tunnel, and the sender of chunks keeps its
bytes in flight bounded by the receiver's acks (the transfer's window).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

#: File work pauses this long after the last interactive message (a screen update's tiles, an ack), so the
#: bytes of an update cross every hop before more chunks compete with them for the CPU and the sockets
#: (benchmarks/transfer.py) — but never longer than QUIET_MAX_S, so a busy screen slows a transfer, never stops it.
QUIET_S = 0.01
QUIET_MAX_S = 0.05

_T = TypeVar("_T")


class PrioritySender:
    """One tunnel's writer: ``send`` goes first; ``send_bulk`` (file chunks) only while nothing else waits."""

    def __init__(self, send: Callable[[str | bytes], Awaitable[None]], *, quiet_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 send_many: Callable[[Sequence[str | bytes]], Awaitable[None]] | None = None) -> None:
        self._send = send
        self._send_many = send_many
        self.quiet_s = quiet_s
        self.clock = clock
        self._last_interactive = float("-inf")
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def send(self, data: str | bytes, /, *, screen: bool = True) -> None:
        """Send ahead of any chunk; ``screen`` False (a transfer's own acks and notices): no quiet period after it."""
        await self._interactive(self._send, data, screen=screen)

    async def send_many(self, messages: Sequence[str | bytes], /) -> None:
        """Screen messages (an update's) ahead of any chunk, in one call of ``send_many`` (else one by one)."""
        await self._interactive(self._send_all, messages, screen=True)

    async def _send_all(self, messages: Sequence[str | bytes]) -> None:
        if self._send_many is not None:
            await self._send_many(messages)
            return
        for message in messages:
            await self._send(message)

    async def _interactive(self, send: Callable[[_T], Awaitable[None]], data: _T, *, screen: bool) -> None:
        self._waiting += 1
        self._idle.clear()
        try:
            async with self._lock:
                await send(data)
        finally:
            if screen:
                self._last_interactive = self.clock()
            self._waiting -= 1
            if not self._waiting:
                self._idle.set()

    async def quiet(self) -> None:
        """Return once no interactive message went for ``quiet_s`` (at most QUIET_MAX_S from now)."""
        deadline = self.clock() + QUIET_MAX_S
        while True:
            now = self.clock()
            left = min(self._last_interactive + self.quiet_s, deadline) - now
            if left <= 0:
                return
            await asyncio.sleep(left)  # pacing, not synchronisation: file work yields to the screen

    async def send_bulk(self, data: str | bytes, /) -> None:
        await self.quiet()
        while True:
            await self._idle.wait()
            async with self._lock:
                if self._waiting:
                    continue  # an interactive message came while this one waited for the lock: it goes first
                await self._send(data)
                return
