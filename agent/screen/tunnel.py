"""The transport contract of a session tunnel.

Anything with these two coroutines works: a ``websockets`` asyncio connection, the
relay's pipe, or an in-memory pair in tests. ``recv`` raises (for websockets,
``ConnectionClosed``) once the tunnel is closed; that ends the session.
"""

from __future__ import annotations

from typing import Protocol


class Tunnel(Protocol):
    async def send(self, data: str | bytes, /) -> None: ...

    async def recv(self) -> str | bytes: ...
