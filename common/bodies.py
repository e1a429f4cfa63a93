"""Reading a body to its end within a limit: the one helper the API middleware and the signer link share.

``read(n)`` on a stream returns what is buffered so far, not ``n`` bytes, so one call reads a body sent
slowly (or split by TLS records) only in part — both callers once did exactly that. This loops to the end
of the stream and refuses, with the caller's own error, as soon as more than ``limit`` bytes arrived (never
holding more than ``limit + 1``). It takes any object with an async ``read(n)`` (aiohttp's ``StreamReader``
among them) and imports nothing beyond the standard library: ``common/`` is imported by the agent too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class ReadableStream(Protocol):
    async def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes (what is available), ``b""`` at the end."""
        ...


async def read_capped(stream: ReadableStream, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """The stream's bytes to its end; ``too_large()`` is raised once more than ``limit`` bytes came."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise too_large()
    return b"".join(chunks)
