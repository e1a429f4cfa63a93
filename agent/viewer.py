"""Reference viewer: the technician end of a session tunnel, in Python.

Keeps a BGR framebuffer of the selected monitor, applies every update, and acks each
update once its last rectangle is drawn (that ack is what paces the agent). The pointer
is kept apart from the framebuffer, as a browser draws it: the last ``cursor`` position
and the last CURSOR_SHAPE (RGBA + hotspot; None until the agent sent one, meaning
"draw a default arrow"). Used by
the tests and the benchmark, and by ``helpline viewer URL`` (see :func:`main`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import websockets

from protocol import stream
from protocol.stream import Kind, StreamProtocolError

from .screen.encoder import DecodeError, decode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CursorShape:
    """The pointer image the agent last sent: straight-alpha RGBA rows, hotspot inside."""

    w: int
    h: int
    hot_x: int
    hot_y: int
    rgba: bytes
    seq: int


@dataclass
class ViewerStats:
    updates: int = 0
    cursor_shapes: int = 0
    rects: int = 0
    refreshes: int = 0
    bytes_received: int = 0
    acks_sent: int = 0
    errors: list[stream.Error] = field(default_factory=list)
    bad_messages: int = 0
    #: (arrival time, bytes) of every complete update, for rates.
    arrivals: list[tuple[float, int]] = field(default_factory=list)


class Viewer:
    """A session-tunnel client with a decoded framebuffer."""

    def __init__(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
        auto_ack: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.ssl_context = ssl_context
        self.headers = dict(headers or {})
        self.auto_ack = auto_ack
        self.clock = clock
        self.framebuffer: npt.NDArray[np.uint8] = np.zeros((1, 1, 3), dtype=np.uint8)
        self.monitors: list[stream.MonitorInfo] = []
        self.selected: int | None = None
        self.cursor: stream.Cursor | None = None
        self.cursor_shape: CursorShape | None = None
        self.agent_stats: stream.Stats | None = None
        self.stats = ViewerStats()
        self.last_seq: int | None = None
        self.pending_acks: list[int] = []
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._frame_bytes = 0
        self.closed = asyncio.Event()

    # --- connection ---------------------------------------------------------------------

    async def connect(self) -> Viewer:
        self._ws = await websockets.connect(
            self.url, ssl=self.ssl_context, additional_headers=self.headers or None, max_size=16 * 1024 * 1024
        )
        self._reader = asyncio.create_task(self._read_loop(), name="viewer-reader")
        return self

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def __aenter__(self) -> Viewer:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- sending ------------------------------------------------------------------------

    async def send(self, message: stream.StreamMessage) -> None:
        await self._ws.send(stream.encode_text(message))

    async def send_mouse(
        self, x: int, y: int, action: Literal["move", "down", "up", "wheel"] = "move", button: int = 0,
        *, dx: int = 0, dy: int = 0,
    ) -> None:
        await self.send(stream.InputMouse(x=x, y=y, action=action, button=button, dx=dx, dy=dy))

    async def click(self, x: int, y: int, button: int = 0) -> None:
        await self.send_mouse(x, y, "move")
        await self.send_mouse(x, y, "down", button)
        await self.send_mouse(x, y, "up", button)

    async def send_key(self, code: str, action: Literal["down", "up"]) -> None:
        await self.send(stream.InputKey(code=code, action=action))

    async def press_key(self, code: str) -> None:
        await self.send_key(code, "down")
        await self.send_key(code, "up")

    async def send_text(self, text: str) -> None:
        await self.send(stream.InputText(text=text))

    async def select_monitor(self, index: int) -> None:
        await self.send(stream.MonitorSelect(index=index))

    async def set_quality(self, hint: Literal["auto", "low", "medium", "high"]) -> None:
        await self.send(stream.Quality(hint=hint))

    async def ack_pending(self) -> None:
        """Ack updates held back while ``auto_ack`` was off."""
        acks, self.pending_acks = self.pending_acks, []
        for seq in acks:
            await self._ack(seq)

    async def _ack(self, seq: int) -> None:
        await self.send(stream.Ack(seq=seq))
        self.stats.acks_sent += 1

    # --- waiting ------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[Viewer], bool], timeout: float) -> None:
        """Wait until ``predicate(self)`` holds after some message; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self) or self.closed.is_set())
        if not predicate(self):
            raise ConnectionError("viewer connection closed before the condition held")

    async def wait_for_updates(self, count: int, timeout: float) -> None:
        target = self.stats.updates + count
        await self.wait_for(lambda v: v.stats.updates >= target, timeout)

    def region(self, x: int, y: int, w: int, h: int) -> npt.NDArray[np.uint8]:
        return self.framebuffer[y : y + h, x : x + w]

    # --- receiving ----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            async for data in self._ws:
                now = self.clock()
                if isinstance(data, bytes):
                    await self._on_binary(data, now)
                else:
                    self._on_text(data)
                async with self._changed:
                    self._changed.notify_all()
        except websockets.ConnectionClosed as exc:
            log.info("viewer: connection closed: %s", exc)
        finally:
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def _on_binary(self, data: bytes, now: float) -> None:
        self.stats.bytes_received += len(data)
        try:
            update = stream.unpack_update(data)
        except StreamProtocolError as exc:
            self.stats.bad_messages += 1
            log.warning("viewer: bad update: %s", exc)
            return
        if update.kind is Kind.CURSOR_SHAPE:  # not part of any update: never acked
            self.cursor_shape = CursorShape(update.w, update.h, update.x, update.y, update.payload, update.seq)
            self.stats.cursor_shapes += 1
            return
        self._frame_bytes += len(data)
        try:
            if update.monitor == self.selected:
                self._draw(update)
        except DecodeError as exc:
            self.stats.bad_messages += 1
            log.warning("viewer: bad update: %s", exc)
            return
        self.stats.rects += 1
        self.stats.refreshes += update.kind is Kind.REFRESH
        if update.end_of_frame:
            self.stats.updates += 1
            self.stats.arrivals.append((now, self._frame_bytes))
            self._frame_bytes = 0
            self.last_seq = update.seq
            if self.auto_ack:
                await self._ack(update.seq)
            else:
                self.pending_acks.append(update.seq)

    def _draw(self, update: stream.Update) -> None:
        fh, fw = self.framebuffer.shape[:2]
        if update.x + update.w > fw or update.y + update.h > fh:
            raise DecodeError(f"rectangle {update.x},{update.y} {update.w}x{update.h} outside {fw}x{fh}")
        pixels = decode(update.encoding, update.payload, update.w, update.h)
        self.framebuffer[update.y : update.y + update.h, update.x : update.x + update.w] = pixels

    def _on_text(self, data: str) -> None:
        self.stats.bytes_received += len(data.encode())
        try:
            message = stream.decode_text(data)
        except StreamProtocolError as exc:
            self.stats.bad_messages += 1
            log.warning("viewer: bad text message: %s", exc)
            return
        if isinstance(message, stream.Monitors):
            self.monitors = list(message.monitors)
            self.selected = message.selected
            mon = message.monitors[message.selected]
            if self.framebuffer.shape[:2] != (mon.h, mon.w):
                self.framebuffer = np.zeros((mon.h, mon.w, 3), dtype=np.uint8)
        elif isinstance(message, stream.Cursor):
            self.cursor = message
        elif isinstance(message, stream.Error):
            self.stats.errors.append(message)
        elif isinstance(message, stream.Stats):
            self.agent_stats = message

    # --- figures ------------------------------------------------------------------------

    def rates(self, since: float, until: float | None = None) -> tuple[float, float]:
        """(updates/s, bytes/s) of updates that arrived in [since, until]."""
        until = self.clock() if until is None else until
        picked = [b for t, b in self.stats.arrivals if since <= t <= until]
        span = max(until - since, 1e-9)
        return len(picked) / span, sum(picked) / span

