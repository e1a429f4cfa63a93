"""A screen session run by the session helper, over the tunnel the root service holds.

The device key is root's, so the service keeps the mTLS tunnel; the helper, which can see the
user's display, runs the real :func:`agent.screen.session.run_screen_session` against a
tunnel-shaped relay. This module is the service's half: every tunnel message goes to the
helper as a ``screen.frame``, every frame back goes onto the tunnel, untouched (the relay
never decodes screen data, like the server's). It returns the same :class:`SessionStats`
the in-process runner does, so the session code cannot tell the two apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec

from protocol.desktop import ScreenEnded, ScreenFrame, ScreenStart, ScreenStop, ToolkitRights

from ..screen.session import SessionStats
from ..screen.tunnel import Tunnel
from .link import HelperLink, StreamRelay, new_id

log = logging.getLogger(__name__)

#: After asking the helper to stop, how long its end report may take.
STOP_GRACE_S = 5.0


async def relay_screen(link: HelperLink, tunnel: Tunnel, *, mode: str, stop: asyncio.Event | None,
                       monitor: int | None = None, toolkit: ToolkitRights | None = None,
                       session_id: str = "", lean_jpeg: bool = False, batched: bool = False) -> SessionStats:
    """Run one screen stream on ``link``'s helper until the tunnel closes, ``stop`` is set or the helper ends it."""
    stream = StreamRelay(new_id("stream"))
    link.streams[stream.stream_id] = stream
    stats = SessionStats()
    try:
        await link.send(ScreenStart(stream_id=stream.stream_id, mode="control" if mode == "control" else "view",
                                    monitor=monitor, toolkit=toolkit, session_id=session_id[:256],
                                    jpeg_lean=True if lean_jpeg else msgspec.UNSET,
                                    batched=True if batched else msgspec.UNSET))
    except ConnectionError:
        link.streams.pop(stream.stream_id, None)
        stats.end_reason = "session helper gone"
        return stats
    tasks: dict[asyncio.Future[Any], str] = {
        asyncio.ensure_future(_to_helper(link, stream, tunnel)): "tunnel",
        asyncio.ensure_future(_to_tunnel(stream, tunnel, stats)): "helper",
        asyncio.ensure_future(link.closed.wait()): "gone",
    }
    if stop is not None:
        tasks[asyncio.ensure_future(stop.wait())] = "stop"
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = next(iter(done))
        why = tasks[first]
        exc = first.exception() if not first.cancelled() else None
        if why == "tunnel":
            stats.end_reason = "tunnel closed"
            log.info("screen relay: tunnel closed (%s)", exc)
        elif why == "gone":
            stats.end_reason = "session helper gone"
        elif why == "stop":
            stats.end_reason = "stopped"
        if not stream.ended.done() and not link.closed.is_set():
            with contextlib.suppress(ConnectionError):
                await link.send(ScreenStop(stream_id=stream.stream_id))
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(STOP_GRACE_S):
                ended: ScreenEnded = await stream.ended
                stats.refused_inputs = ended.refused_inputs
                stats.injected_inputs = ended.injected_inputs
                stats.updates_sent = max(stats.updates_sent, ended.updates_sent)
                if not stats.end_reason:
                    stats.end_reason = ended.reason or "screen session ended"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        link.streams.pop(stream.stream_id, None)
    return stats


async def _to_helper(link: HelperLink, stream: StreamRelay, tunnel: Tunnel) -> None:
    """Viewer → helper: acks, input, monitor switches, as they came."""
    while True:
        data = await tunnel.recv()
        if isinstance(data, str):
            frame = ScreenFrame(stream_id=stream.stream_id, text=data)
        else:
            frame = ScreenFrame(stream_id=stream.stream_id, data=bytes(data))
        await link.send(frame)


async def _to_tunnel(stream: StreamRelay, tunnel: Tunnel, stats: SessionStats) -> None:
    """Helper → viewer: screen updates, cursor, monitors, errors; returns when the helper ends the stream."""
    while True:
        frame = await stream.frames.get()
        if frame is None:
            return
        payload: str | bytes = frame.text if frame.text is not None else (frame.data or b"")
        stream.queued_bytes -= len(payload)
        await tunnel.send(payload)
        stats.messages_sent += 1
        stats.bytes_sent += len(payload)
