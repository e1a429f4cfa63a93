"""Several websocket messages in one socket write: an update's frames leave together.

``websockets``' ``send`` writes each message on its own: one ``transport.write`` per frame,
which over TLS is one TLS record and one ``send`` call. A screen update is many small
messages (FILL rectangles, JPEG bands) that go back to back anyway, so :func:`send_frames`
frames them all under one ``send_context`` — the lock, state checks, error handling and
drain of ``send`` itself — and writes the frames joined: one record run, one system call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from websockets.asyncio.connection import Connection


async def send_frames(ws: Connection, messages: Sequence[str | bytes]) -> None:
    """Send ``messages`` (str: text, bytes: binary) in order, each its own websocket message, in one write."""
    while ws.send_in_progress is not None:  # a fragmented message is being sent: as ``send`` does, wait
        await asyncio.shield(ws.send_in_progress)
    async with ws.send_context():
        protocol = ws.protocol
        for message in messages:
            if isinstance(message, str):
                protocol.send_text(message.encode())
            else:
                protocol.send_binary(message)
        pending = protocol.data_to_send()
        # An empty item means "half-close" (never after data frames in OPEN state); leave it, and what
        # follows it, to send_context's own writer.
        cut = next((i for i, data in enumerate(pending) if not data), len(pending))
        if cut:
            ws.transport.write(b"".join(pending[:cut]))
        protocol.writes[:0] = pending[cut:]
