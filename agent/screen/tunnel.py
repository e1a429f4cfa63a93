"""The transport contract of a session tunnel.

Anything with these two coroutines works: a ``websockets`` asyncio connection, the
relay's pipe, or an in-memory pair in tests. ``recv`` raises (for websockets,
``ConnectionClosed``) once the tunnel is closed; that ends the session.

A tunnel may also offer ``send_many(messages)``: the messages in order, in one call (the
layers between the session and the socket then run once per update, not once per message,
and the websocket writes the update's frames in one write: :mod:`agent.ws_batch`).
:func:`send_all` uses it where it exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Tunnel(Protocol):
    async def send(self, data: str | bytes, /) -> None: ...

    async def recv(self) -> str | bytes: ...


async def send_all(tunnel: Tunnel, messages: Sequence[str | bytes]) -> None:
    """Send ``messages`` in order: in one ``send_many`` call where ``tunnel`` has one, else one by one."""
    many = getattr(tunnel, "send_many", None)
    if many is not None:
        await many(messages)
        return
    for message in messages:
        await tunnel.send(message)
