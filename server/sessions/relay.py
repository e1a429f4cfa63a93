"""The relay: pairs a technician's stream websocket with the agent's tunnel and pipes both ways.

Each side's handler runs :meth:`Relay.serve`: a reader that puts the side's messages in a
bounded queue (a full queue makes the reader wait, which pushes back on that peer's TCP
connection) and a writer that drains the other side's queue. Screen data is never decoded:
messages are forwarded as opaque text/binary frames (text is only glanced at: the technician's
input on view-only sessions; the in-session toolkit's file.offer/file.start against the server's
size cap, finished transfers and clipboard text for the audit, chat lines for the transcript —
file chunks never). When either side ends, both
are closed. Optionally the session is appended to a per-session recording file: the agent's
side whole but for file chunks and clipboard text (toolkit), the technician's only as
:mod:`.redact` allows (pointer events, key up/down without the key — never typed text), in a
0600 file in a 0700 directory.

Idle sessions end: the relay notes the last *activity* — an ``input.*`` message from the
technician, or a screen update from the agent that changed at least
``idle_min_change_px`` pixels (summed over the rectangles of one update, read from the
fixed binary header only) — and ends the session ``idle timeout`` after
``idle_timeout_s`` without any.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from aiohttp import WSMsgType, web

from common.files import atomic_write
from protocol import stream, toolkit
from protocol.session import EndReason

from .redact import technician_record
from .settings import SessionSettings
from .shell_relay import ShellWatch
from .spool import AppendSpool

log = logging.getLogger(__name__)

Side = Literal["technician", "agent"]
Item = tuple[bool, str | bytes] | None  # (is_binary, data); None = stop
#: Recording record header: seconds since start, direction (0 agent→technician, 1 back), binary flag, length.
RECORD_HEADER = struct.Struct(">dBBI")
#: The parts of a screen update's header the idle check reads: kind, then w/h, then sequence.
_KIND_AT, _SIZE, _SEQ = 1, struct.Struct(">HH"), struct.Struct(">I")
_SIZE_AT, _SEQ_AT = 8, 13


class Recorder:
    """Appends messages to a file from a writer thread (never blocks the event loop on disk)."""

    def __init__(self, path: Path, metadata: dict[str, object]) -> None:
        self.path = path
        self.metadata = metadata
        self.started = time.monotonic()
        self._spool = AppendSpool(path, max_records=256, what="recording")

    def add(self, direction: int, binary: bool, data: str | bytes) -> None:
        if direction == 0 and _toolkit_private(binary, data):
            return  # file bytes and clipboard text from the device are not screen: never in a recording
        if direction == 1:  # the technician's side: what redact keeps of it, never typed input
            kept = technician_record(binary, data)
            if kept is None:
                return
            data, binary = kept, False
        payload = data if isinstance(data, bytes) else data.encode()
        header = RECORD_HEADER.pack(time.monotonic() - self.started, direction, int(binary), len(payload))
        self._spool.put(header + payload)

    async def close(self, extra: dict[str, object]) -> None:
        await asyncio.to_thread(self._spool.close)
        meta = {**self.metadata, **extra, "format": "hlrec1: >dBBI header (t, dir, binary, len) + payload"}
        await asyncio.to_thread(atomic_write, self.path.with_suffix(".json"), json.dumps(meta, indent=1))


class Relay:
    def __init__(self, session_id: str, settings: SessionSettings, *, view_only: Callable[[], bool],
                 on_input_refused: Callable[[], None], on_end: Callable[[str, str], Awaitable[object]],
                 recorder: Recorder | None = None, clock: Callable[[], float] = time.monotonic,
                 on_transfer: Callable[[toolkit.FileDone | toolkit.FileEnd], None] | None = None,
                 on_clipboard: Callable[[str, str], None] | None = None,
                 on_chat: Callable[[toolkit.ChatMessage], None] | None = None,
                 shell: ShellWatch | None = None) -> None:
        self.session_id = session_id
        #: The remote shell's refusals, asciicast recording and audit (:mod:`.shell_relay`).
        self.shell = shell
        self.on_chat = on_chat
        self.on_transfer = on_transfer
        self.on_clipboard = on_clipboard
        self.clock = clock
        self.last_activity = clock()
        self._update_seq = -1
        self._update_px = 0
        self.settings = settings
        self.view_only = view_only
        self.on_input_refused = on_input_refused
        self.on_end = on_end
        self.recorder = recorder
        self.recording_path = recorder.path if recorder else None
        self.queues: dict[Side, asyncio.Queue[Item]] = {
            "technician": asyncio.Queue(settings.relay_queue_messages),  # from the technician
            "agent": asyncio.Queue(settings.relay_queue_messages),  # from the agent
        }
        self.sockets: dict[Side, web.WebSocketResponse] = {}
        self.paired = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.bytes_to_technician = 0
        self.bytes_to_agent = 0

    def attached(self, side: Side) -> bool:
        return side in self.sockets

    async def serve(self, side: Side, ws: web.WebSocketResponse) -> None:
        """Pipe this side until either side ends; then close this side's websocket."""
        self.sockets[side] = ws
        if len(self.sockets) == 2:
            self.paired.set()
        other: Side = "agent" if side == "technician" else "technician"
        tasks = {
            asyncio.ensure_future(self._read(side, ws)): "read",
            asyncio.ensure_future(self._write(ws, self.queues[other])): "write",
            asyncio.ensure_future(self.closed.wait()): "closed",
            asyncio.ensure_future(self._pair_deadline()): "unpaired",
        }
        if side == "agent" and self.settings.idle_timeout_s > 0:
            tasks[asyncio.ensure_future(self._idle_deadline())] = "idle"
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            what = {tasks[t] for t in done}
            if "closed" not in what:
                if "unpaired" in what:
                    reason, by = "the other side never connected", "server"
                elif "idle" in what:
                    reason, by = EndReason.IDLE.value, "server"
                    log.info("session idle; ending it", extra={"session_id": self.session_id,
                                                               "idle_s": self.settings.idle_timeout_s})
                elif side == "technician":
                    reason, by = EndReason.TECHNICIAN_GONE.value, "technician"
                else:
                    reason, by = EndReason.TUNNEL_CLOSED.value, "agent"
                await self.on_end(reason, by)
                await self.close(reason)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await ws.close(code=1000, message=(self.close_reason or "session ended").encode()[:120])

    async def _pair_deadline(self) -> None:
        try:
            await asyncio.wait_for(self.paired.wait(), self.settings.pair_timeout_s)
        except TimeoutError:
            return
        await asyncio.Future()  # paired: never fires

    async def _idle_deadline(self) -> None:
        """Return once the paired session has seen no activity for ``idle_timeout_s``."""
        await self.paired.wait()
        self.last_activity = self.clock()
        while True:
            left = self.last_activity + self.settings.idle_timeout_s - self.clock()
            if left <= 0:
                return
            await asyncio.sleep(left)

    def _note_agent_binary(self, data: bytes) -> None:
        """Count a screen update's changed pixels (header only); enough of them is activity."""
        if len(data) < stream.HEADER_SIZE or data[_KIND_AT] != stream.Kind.UPDATE:
            return  # refinements of already-sent regions and cursor shapes are not changes
        (seq,) = _SEQ.unpack_from(data, _SEQ_AT)
        w, h = _SIZE.unpack_from(data, _SIZE_AT)
        if seq != self._update_seq:
            self._update_seq, self._update_px = seq, 0
        self._update_px += w * h
        if self._update_px >= self.settings.idle_min_change_px:
            self.last_activity = self.clock()

    async def _read(self, side: Side, ws: web.WebSocketResponse) -> None:
        inbox = self.queues[side]
        direction = 1 if side == "technician" else 0
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                data: str | bytes = msg.data
                binary = True
                if side == "agent":
                    self._note_agent_binary(msg.data)
            elif msg.type == WSMsgType.TEXT:
                data, binary = msg.data, False
                if side == "agent" and self.on_transfer is not None and msg.data.startswith(_TRANSFER_PREFIXES):
                    self._note_transfer(msg.data)
                if msg.data.startswith(_SIZED_PREFIXES) and await self._over_cap(side, msg.data):
                    continue  # refused here: the file is bigger than the server allows
                if self.on_clipboard is not None and msg.data.startswith(_CLIP_PREFIX):
                    self._note_clipboard(side, msg.data)
                if side == "agent" and self.on_chat is not None and msg.data.startswith(_CHAT_PREFIX):
                    self._note_chat(msg.data)
                if side == "technician" and _is_input(msg.data):
                    self.last_activity = self.clock()
                    if self.view_only():
                        self.on_input_refused()
            else:
                return
            shell_output = False
            if self.shell is not None:
                if side == "technician":
                    is_shell, answer = self.shell.from_technician(binary, data)
                    if answer is not None:
                        if answer:
                            await self.queues["agent"].put((False, answer))  # to the technician
                        continue
                    if is_shell:
                        self.last_activity = self.clock()  # a keystroke in the shell is activity
                else:
                    shell_output = self.shell.from_agent(binary, data)
                    if shell_output:
                        self.last_activity = self.clock()
            if side == "agent":
                self.bytes_to_technician += len(data)
            else:
                self.bytes_to_agent += len(data)
            if self.recorder is not None and not shell_output:  # the shell has its own recording (.cast)
                self.recorder.add(direction, binary, data)
            await inbox.put((binary, data))

    @staticmethod
    async def _write(ws: web.WebSocketResponse, outbox: asyncio.Queue[Item]) -> None:
        while True:
            item = await outbox.get()
            if item is None:
                return
            binary, data = item
            if binary:
                assert isinstance(data, bytes)
                await ws.send_bytes(data)
            else:
                assert isinstance(data, str)
                await ws.send_str(data)

    def _note_transfer(self, text: str) -> None:
        """A finished file transfer the agent reports (name, size, SHA-256 — never content): audit it."""
        try:
            message = toolkit.decode_text(text)
        except toolkit.ToolkitProtocolError:
            return
        if isinstance(message, (toolkit.FileDone, toolkit.FileEnd)) and self.on_transfer is not None:
            self.on_transfer(message)

    async def _over_cap(self, side: Side, text: str) -> bool:
        """A ``file.offer`` (technician) or ``file.start`` (agent) above the server's cap: answer both ends with
        ``file.error`` (the agent stops sending) and drop it. False when it may pass."""
        try:
            message = toolkit.decode_text(text)
        except toolkit.ToolkitProtocolError:
            return False
        if not isinstance(message, (toolkit.FileOffer, toolkit.FileStart)):
            return False
        if message.size <= self.settings.max_file_bytes:
            return False
        error = toolkit.encode_text(toolkit.FileError(
            transfer=message.transfer, code="too_large",
            message=f"{message.size} bytes exceeds this server's {self.settings.max_file_bytes}-byte limit"))
        await self.queues["agent"].put((False, error))  # to the technician
        if side == "agent":
            await self.queues["technician"].put((False, error))  # to the agent: stop sending
        log.info("file transfer above the server's cap refused", extra={"session_id": self.session_id,
                                                                        "size": message.size})
        return True

    def _note_chat(self, text: str) -> None:
        """A chat line the device showed: kept with the session (the transcript)."""
        try:
            message = toolkit.decode_text(text)
        except toolkit.ToolkitProtocolError:
            return
        if isinstance(message, toolkit.ChatMessage) and self.on_chat is not None:
            self.on_chat(message)

    def _note_clipboard(self, side: Side, text: str) -> None:
        """Clipboard text crossing the relay: audited by direction, length and hash, never the text."""
        try:
            message = toolkit.decode_text(text)
        except toolkit.ToolkitProtocolError:
            return
        if isinstance(message, toolkit.ClipSet) and self.on_clipboard is not None:
            self.on_clipboard("from_device" if side == "agent" else "to_device", message.text)

    async def close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        if self.shell is not None:
            await asyncio.to_thread(self.shell.close)
        if self.recorder is not None:
            await self.recorder.close({"ended_reason": reason, "bytes_to_technician": self.bytes_to_technician,
                                       "bytes_to_agent": self.bytes_to_agent, "ended_at": time.time()})


#: The agent's toolkit messages that end a transfer (msgspec writes the tag first).
_TRANSFER_PREFIXES = ('{"type":"file.done"', '{"type":"file.end"')
_CLIP_PREFIX = '{"type":"clip.set"'
_CHAT_PREFIX = '{"type":"chat.message"'
_SIZED_PREFIXES = ('{"type":"file.offer"', '{"type":"file.start"')


def _toolkit_private(binary: bool, data: str | bytes) -> bool:
    """A device → technician toolkit message a recording must not keep: a file chunk or clipboard text."""
    if binary:
        return isinstance(data, (bytes, bytearray)) and toolkit.is_chunk(data)
    return isinstance(data, str) and data.startswith(_CLIP_PREFIX)


def _is_input(text: str) -> bool:
    """Is this technician text message an input event? (A glance at its type; never screen data.)"""
    if len(text) > 4096:
        return False
    try:
        kind = json.loads(text).get("type", "")
    except (ValueError, AttributeError):
        return False
    return isinstance(kind, str) and kind.startswith("input.")

