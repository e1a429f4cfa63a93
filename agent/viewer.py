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
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import websockets

from protocol import stream
from protocol import toolkit as tk
from protocol.stream import Kind, StreamProtocolError

from .screen.encoder import DecodeError, decode
from .toolkit.priority import QUIET_S, PrioritySender

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


def with_batches(url: str) -> str:
    """``url`` with ``batched=1`` in its query (kept as it is when it already says so)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if ("batched", "1") in query:
        return url
    query = [(k, v) for k, v in query if k != "batched"] + [("batched", "1")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


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
        #: It reads batched updates: the relay may pass an update's records on in one message (``?batched=1``).
        self.url = with_batches(url)
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
        self._sender: PrioritySender
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._frame_bytes = 0
        self.closed = asyncio.Event()
        #: The in-session toolkit (protocol.toolkit): what the agent allows, the chat, transfers by number.
        self.caps: tk.Caps | None = None
        self.chat: list[tk.ChatMessage] = []
        self.toolkit_events: dict[int, list[tk.ToolkitAny]] = {}
        self._fetching: dict[int, _Fetch] = {}
        #: Per transfer: the highest acked offset, and whether it failed (O(1) for send_file's window).
        self._acked: dict[int, int] = {}
        self._failed: set[int] = set()
        #: Clipboard texts the device sent (clip.set), and the sync state it confirmed (clip.sync).
        self.clipboard: list[str] = []
        self.clip_sync: tk.ClipSync | None = None
        self._next_transfer = 1
        #: Where the last ``send_file(stop_after=…)`` stopped sending.
        self.last_sent = 0

    # --- connection ---------------------------------------------------------------------

    async def connect(self) -> Viewer:
        self._ws = await websockets.connect(
            self.url, ssl=self.ssl_context, additional_headers=self.headers or None, max_size=16 * 1024 * 1024
        )
        # Screen acks, input and chat first; file chunks only when nothing else waits (agent.toolkit.priority).
        self._sender = PrioritySender(self._ws.send, quiet_s=QUIET_S)
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
        await self._sender.send(stream.encode_text(message))

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
        if tk.is_chunk(data):
            await self._on_chunk(data)
            return
        try:
            records = stream.unpack_records(data)
        except StreamProtocolError as exc:
            self.stats.bad_messages += 1
            log.warning("viewer: bad update: %s", exc)
            return
        shape = records[0]
        if shape.kind is Kind.CURSOR_SHAPE:  # always alone (unpack_records), and part of no update: never acked
            self.cursor_shape = CursorShape(shape.w, shape.h, shape.x, shape.y, shape.payload, shape.seq)
            self.stats.cursor_shapes += 1
            return
        self._frame_bytes += len(data)
        for update in records:
            try:
                if update.monitor == self.selected:
                    self._draw(update)
            except DecodeError as exc:  # that rectangle is lost (its refresh mends it); the update goes on
                self.stats.bad_messages += 1
                log.warning("viewer: bad update: %s", exc)
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
            with contextlib.suppress(tk.ToolkitProtocolError):
                self._on_toolkit(tk.decode_text(data))
                return
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

    # --- toolkit ------------------------------------------------------------------------

    async def send_toolkit(self, message: tk.ToolkitAny) -> None:
        await self._sender.send(tk.encode_text(message))

    def _transfer(self) -> int:
        number, self._next_transfer = self._next_transfer, self._next_transfer + 2  # the viewer's are odd
        return number

    async def say(self, text: str) -> None:
        """Send a chat line to the person at the device."""
        await self.send_toolkit(tk.ChatSend(text=text))

    async def sync_clipboard(self, *, to_device: bool, from_device: bool) -> None:
        """Switch clipboard sync per direction (the agent confirms with clip.sync, or refuses)."""
        await self.send_toolkit(tk.ClipSync(to_device=to_device, from_device=from_device))

    async def paste(self, text: str) -> None:
        """Put ``text`` on the device's clipboard (when sync to the device is on)."""
        await self.send_toolkit(tk.ClipSet(text=text))

    def _on_toolkit(self, message: tk.ToolkitAny) -> None:
        if isinstance(message, tk.Caps):
            self.caps = message
        elif isinstance(message, tk.ChatMessage):
            self.chat.append(message)
        elif isinstance(message, tk.ClipSet):
            self.clipboard.append(message.text)
        elif isinstance(message, tk.ClipSync):
            self.clip_sync = message
        elif isinstance(message, (tk.FileAccept, tk.FileAck, tk.FileDone, tk.FileError, tk.FileStart, tk.FileEnd)):
            self.toolkit_events.setdefault(message.transfer, []).append(message)
            if isinstance(message, tk.FileAck):
                self._acked[message.transfer] = max(self._acked.get(message.transfer, 0), message.offset)
            elif isinstance(message, tk.FileError):
                self._failed.add(message.transfer)
            fetch = self._fetching.get(message.transfer)
            if fetch is not None and isinstance(message, tk.FileStart):
                fetch.start(message)

    async def _on_chunk(self, data: bytes) -> None:
        try:
            chunk = tk.unpack_chunk(data)
        except tk.ToolkitProtocolError as exc:
            self.stats.bad_messages += 1
            log.warning("viewer: bad chunk: %s", exc)
            return
        fetch = self._fetching.get(chunk.transfer)
        if fetch is None or not fetch.write(chunk):
            self.stats.bad_messages += 1
            return
        await self.send_toolkit(tk.FileAck(transfer=chunk.transfer, offset=fetch.offset))

    async def _wait_event(self, transfer: int, kinds: tuple[type, ...], timeout: float) -> tk.ToolkitAny:
        def found(v: Viewer) -> bool:
            return any(isinstance(e, kinds) for e in v.toolkit_events.get(transfer, []))
        await self.wait_for(found, timeout)
        return next(e for e in self.toolkit_events[transfer] if isinstance(e, kinds))

    async def send_file(self, path: str, *, name: str | None = None, size: int | None = None,
                        sha256: str | None = None, timeout: float = 120.0, stop_after: int | None = None,
                        transfer: int | None = None) -> tk.FileDone | tk.FileError | None:
        """Send a local file to the device's Downloads; the agent's ``file.done`` or ``file.error``.

        ``name``/``size``/``sha256`` override what is declared (tests of a lying peer); ``stop_after``
        stops after that many bytes and returns None (a dropped tunnel); ``transfer`` reuses a number.
        """
        real_size, real_sha = await asyncio.to_thread(_size_and_hash, path)
        sha256 = real_sha if sha256 is None else sha256
        number = transfer if transfer is not None else self._transfer()
        self.toolkit_events.pop(number, None)
        self._acked.pop(number, None)
        self._failed.discard(number)
        declared = real_size if size is None else size
        await self.send_toolkit(tk.FileOffer(transfer=number, name=name or Path(path).name, size=declared,
                                             sha256=sha256))
        first = await self._wait_event(number, (tk.FileAccept, tk.FileError), timeout)
        if isinstance(first, tk.FileError):
            return first
        assert isinstance(first, tk.FileAccept)
        offset, window = first.offset, first.window * first.chunk
        src = await asyncio.to_thread(open, path, "rb")
        try:
            while offset < real_size:
                if stop_after is not None and offset >= stop_after:
                    self.last_sent = offset
                    return None
                acked = max(self._acked.get(number, 0), first.offset)
                if offset - acked >= window:
                    await self.wait_for(lambda v, a=acked: number in v._failed  # type: ignore[misc]
                                        or v._acked.get(number, 0) > a, timeout)
                    if number in self._failed:
                        break
                    continue
                block = await asyncio.to_thread(_read_at, src, offset, first.chunk)
                await self._sender.send_bulk(tk.pack_chunk(number, offset, block))
                offset += len(block)
        finally:
            src.close()
        end = await self._wait_event(number, (tk.FileDone, tk.FileError), timeout)
        assert isinstance(end, (tk.FileDone, tk.FileError))
        return end

    async def fetch_file(self, remote: str, dest: str, *, timeout: float = 120.0) -> tk.FileEnd | tk.FileError:
        """Fetch ``remote`` from the device into ``dest``; the agent's ``file.end`` (hash checked) or ``file.error``."""
        number = self._transfer()
        fetch = _Fetch(dest)
        self._fetching[number] = fetch
        try:
            await self.send_toolkit(tk.FileFetch(transfer=number, path=remote))
            end = await self._wait_event(number, (tk.FileEnd, tk.FileError), timeout)
            assert isinstance(end, (tk.FileEnd, tk.FileError))
            if isinstance(end, tk.FileEnd) and fetch.hasher.hexdigest() != end.sha256:
                return tk.FileError(transfer=number, code="sha256_mismatch", message="fetched bytes do not match")
            return end
        finally:
            fetch.close()
            self._fetching.pop(number, None)

    # --- figures ------------------------------------------------------------------------

    def rates(self, since: float, until: float | None = None) -> tuple[float, float]:
        """(updates/s, bytes/s) of updates that arrived in [since, until]."""
        until = self.clock() if until is None else until
        picked = [b for t, b in self.stats.arrivals if since <= t <= until]
        span = max(until - since, 1e-9)
        return len(picked) / span, sum(picked) / span



def _size_and_hash(path: str) -> tuple[int, str]:
    import hashlib

    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as src:
        while block := src.read(1024 * 1024):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _read_at(src: Any, offset: int, length: int) -> bytes:
    src.seek(offset)
    data: bytes = src.read(length)
    return data


class _Fetch:
    """A file coming from the device: written in order, hashed as it arrives."""

    def __init__(self, dest: str) -> None:
        import hashlib

        self.dest = dest
        self.out: Any = None
        self.offset = 0
        self.size = 0
        self.hasher = hashlib.sha256()

    def start(self, message: tk.FileStart) -> None:
        self.size, self.offset = message.size, message.offset
        self.out = open(self.dest, "wb")  # noqa: SIM115 - closed by close()

    def write(self, chunk: tk.Chunk) -> bool:
        if self.out is None or chunk.offset != self.offset or chunk.offset + len(chunk.data) > self.size:
            return False
        self.out.write(chunk.data)
        self.hasher.update(chunk.data)
        self.offset += len(chunk.data)
        return True

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
