"""A relay queue with two lanes, so a file transfer never stalls typing.

The relay used to keep one FIFO per direction: a screen ack or a keystroke waited behind every
file chunk already queued (benchmarks/transfer.py: the screen's p95 latency 4.4x idle while a
200 MB file went to the device). :class:`Lanes` keeps the toolkit's file traffic — binary
chunks (magic ``0xB1``) and the ``file.*`` text messages that must stay in order with them —
in a *bulk* lane, and everything else (input, screen acks and frames, chat, clipboard, shell)
in an *interactive* lane that :meth:`Lanes.get` always empties first. Each lane is bounded by
``maxsize`` messages; the senders bound the file bytes in flight by acks (the agent's window),
so the bulk lane stays below its bound and the reader never waits on it in practice.
"""

from __future__ import annotations

import asyncio

from protocol import toolkit

#: (is_binary, data); None = stop (the relay's item).
Item = tuple[bool, str | bytes] | None
#: Text messages that travel with the file chunks (msgspec writes the tag first).
_FILE_PREFIX = '{"type":"file.'


def is_bulk(binary: bool, data: str | bytes) -> bool:
    """Is this message file-transfer traffic (a chunk, or a ``file.*`` text that must keep its order with them)?"""
    if binary:
        return isinstance(data, (bytes, bytearray)) and toolkit.is_chunk(data)
    return isinstance(data, str) and data.startswith(_FILE_PREFIX)


class Lanes:
    """``put``/``get`` like ``asyncio.Queue`` of ``(is_binary, data)`` items (None = stop, interactive)."""

    def __init__(self, maxsize: int) -> None:
        self.interactive: asyncio.Queue[Item] = asyncio.Queue(maxsize)
        self.bulk: asyncio.Queue[Item] = asyncio.Queue(maxsize)
        self._ready = asyncio.Event()

    async def put(self, item: Item) -> None:
        lane = self.bulk if item is not None and is_bulk(*item) else self.interactive
        await lane.put(item)
        self._ready.set()

    async def get(self) -> Item:
        """The oldest interactive item; the oldest bulk item only when no interactive one waits."""
        while True:
            if not self.interactive.empty():
                return self.interactive.get_nowait()
            if not self.bulk.empty():
                return self.bulk.get_nowait()
            self._ready.clear()
            await self._ready.wait()

    def qsize(self) -> int:
        return self.interactive.qsize() + self.bulk.qsize()
