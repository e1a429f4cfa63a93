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
import collections
import contextlib
import json
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from aiohttp import WSMsgType, web

from common.background import Background
from common.files import atomic_write
from protocol import stream, toolkit
from protocol.session import EndReason, viewer_mark
from server.storage.sealed import StorageKey

from .lanes import Lanes, is_bulk
from .redact import technician_record
from .settings import SessionSettings
from .shell_relay import ShellWatch
from .spool import AppendSpool

log = logging.getLogger(__name__)

Side = Literal["technician", "agent"]
Item = tuple[bool, str | bytes] | None  # (is_binary, data); None = stop
#: Recording record header: seconds since start, direction (0 agent→technician, 1 back), binary flag, length.
RECORD_HEADER = struct.Struct(">dBBI")


class Recorder:
    """Appends messages to a file from a writer thread (never blocks the event loop on disk)."""

    def __init__(self, path: Path, metadata: dict[str, object], key: StorageKey | None = None) -> None:
        self.path = path
        self.metadata = metadata
        self.started = time.monotonic()
        self._spool = AppendSpool(path, max_records=256, what="recording", key=key)

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


class _Viewer:
    """One technician's websocket and its own outgoing queue (per-viewer flow control)."""

    def __init__(self, name: str, ws: web.WebSocketResponse, clock: Callable[[], float],
                 reads_batches: bool = False) -> None:
        self.name = name
        self.ws = ws
        #: It said it reads batched updates (``?batched=1``); others get a batch's records one a message.
        self.reads_batches = reads_batches
        #: (binary, data, droppable, end-of-frame seq or -1, records in it), oldest first.
        self.items: collections.deque[tuple[bool, str | bytes, bool, int, int]] = collections.deque()
        #: Screen records queued beyond one a message (batches): the queue's length in records is
        #: ``len(items) + extra_records``, what ``VIEWER_MAX_ITEMS`` bounds whether updates come batched or not.
        self.extra_records = 0
        #: File traffic for this viewer (:func:`.lanes.is_bulk`), sent only when ``items`` is empty.
        self.bulk: collections.deque[tuple[bool, str | bytes]] = collections.deque()
        self.wake = asyncio.Event()
        #: Set whenever a reliable (never dropped) item left the queue: a waiting agent reader goes on.
        self.room = asyncio.Event()
        self.reliable = 0
        self.screen_bytes = 0
        #: Screen data is dropped for this viewer until the agent's next ``monitors`` message, after which a
        #: complete screen follows (a joiner starts here; a viewer that fell behind comes back here).
        self.resync = True
        self.refresh_asked = False
        self.dropped = 0
        self.resyncs = 0
        self.replies = _ReplyBudget(clock())


class _ReplyBudget:
    """Error replies to one viewer: a burst of 5, then one per second (refusals are still counted)."""

    def __init__(self, now: float) -> None:
        self.tokens, self.at = 5.0, now

    def take(self, now: float) -> bool:
        self.tokens = min(5.0, self.tokens + (now - self.at))
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class Relay:
    """One agent tunnel fanned out to every admitted technician's stream, each with its own queue.

    Agent → technicians: screen data (binary screen updates and cursor shapes, ``cursor``/``stats``/
    ``monitors``/``error``/``chat.message`` text) goes to every viewer and may be dropped for a viewer that
    falls behind: past ``VIEWER_MAX_ITEMS`` queued messages (a batch counts its records) or ``VIEWER_MAX_BYTES``
    its screen data is thrown away and it waits (``resync``) for a complete screen, which the relay asks the
    agent for by re-selecting the current monitor (the agent resets its pipeline and sends ``monitors`` and then every
    tile) once that viewer's queue has drained — at most every ``REFRESH_MIN_INTERVAL_S``. Everything
    else (toolkit, shell) is for the controlling technician only, with backpressure as before.

    Acks: the agent paces itself on acks (``agent/screen/flow.py``, cumulative); the relay passes each update's
    ack on once, from whichever viewer draws it first, and acks an update itself when no viewer holds it
    (all dropped it, or nobody is attached yet) — so the fastest viewer sets the pace and a slow one only
    loses intermediate frames. Acks the relay has not seen an update for are passed on unchanged.

    Technicians → agent: only the controller's messages go on (acks from everyone); another viewer's
    input is refused here (``on_input_refused``) and answered with an error. Once a second viewer has
    attached, the relay puts a ``viewer.from`` mark (:func:`protocol.session.viewer_mark`) before each
    change of sender, so the agent, which knows who controls, refuses input from anyone else too.
    """

    def __init__(self, session_id: str, settings: SessionSettings, *, view_only: Callable[[], bool],
                 on_input_refused: Callable[[str], None], on_end: Callable[[str, str], Awaitable[object]],
                 recorder: Recorder | None = None, clock: Callable[[], float] = time.monotonic,
                 on_transfer: Callable[[toolkit.FileDone | toolkit.FileEnd], None] | None = None,
                 on_clipboard: Callable[[str, str], None] | None = None,
                 on_chat: Callable[[toolkit.ChatMessage], None] | None = None,
                 shell: ShellWatch | None = None, controller: Callable[[], str | None] | None = None,
                 on_leave: Callable[[str], Awaitable[object]] | None = None) -> None:
        self.session_id = session_id
        #: Relay-made messages to the agent waiting for room (kept alive until queued).
        self._background = Background()
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
        #: A viewer left while others stay (the driver updates the roster, tells the agent, audits).
        self.on_leave = on_leave
        #: Who controls (None: nobody); without a roster, the first viewer to attach.
        self.controller = controller or self._first_viewer
        self.recorder = recorder
        self.recording_path = recorder.path if recorder else None
        #: Technician → agent messages, bounded (a full lane makes the viewers' readers wait); file traffic in
        #: its own lane (:mod:`.lanes`) so keystrokes and acks never wait behind file chunks.
        self.to_agent = Lanes(settings.relay_queue_messages)
        #: The old name of ``to_agent`` (``queues["technician"]``: what the technicians sent, for the agent).
        self.queues: dict[str, Lanes] = {"technician": self.to_agent}
        self.agent_ws: web.WebSocketResponse | None = None
        self.viewers: dict[str, _Viewer] = {}
        self._first: str | None = None
        self.paired = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.bytes_to_technician = 0
        self.bytes_to_agent = 0
        #: Update seq → viewers that still hold it (queued or sent, not acked); the first ack wins.
        self._holding: collections.OrderedDict[int, set[str]] = collections.OrderedDict()
        self._acked: collections.OrderedDict[int, None] = collections.OrderedDict()
        #: The monitor the agent streams (its last ``monitors`` message); None before the first.
        self.selected_monitor: int | None = None
        self._refresh_at = float("-inf")
        self._refresh_timer: asyncio.TimerHandle | None = None
        self._marking = False
        self._marked: str | None = None
        #: Viewers that ever attached, and what the agent said for one before they did (given on attach).
        self._seen: set[str] = set()
        self._early: dict[str, collections.deque[tuple[bool, str | bytes]]] = {}
        self._to_agent_lock = asyncio.Lock()

    def _first_viewer(self) -> str | None:
        return self._first

    def attached(self, side: Side, name: str | None = None) -> bool:
        if side == "agent":
            return self.agent_ws is not None
        return bool(self.viewers) if name is None else name in self.viewers

    # --- serving ------------------------------------------------------------------------------

    async def serve(self, side: Side, ws: web.WebSocketResponse, viewer: str = "technician", *,
                    reads_batches: bool = False) -> None:
        """Pipe this side until it (or the session) ends; then close this side's websocket.

        The agent's side ending ends the session; a viewer's ends it only when no other viewer is left.
        ``reads_batches``: this viewer reads batched updates (a console older than them gets one record a message).
        """
        if side == "agent":
            self.agent_ws = ws
            tasks: dict[asyncio.Future[Any], str] = {asyncio.ensure_future(self._read_agent(ws)): "read",
                                                     asyncio.ensure_future(self._write_agent(ws)): "write"}
            if self.settings.idle_timeout_s > 0:
                tasks[asyncio.ensure_future(self._idle_deadline())] = "idle"
        else:
            state = _Viewer(viewer, ws, self.clock, reads_batches)
            self.viewers[viewer] = state
            self._first = self._first or viewer
            self._seen.add(viewer)
            for early_binary, early_data in self._early.pop(viewer, ()):
                if is_bulk(early_binary, early_data):
                    state.bulk.append((early_binary, early_data))
                else:
                    state.items.append((early_binary, early_data, False, -1, 1))
                state.reliable += 1
            if len(self.viewers) > 1:
                self._marking = True
            if self.selected_monitor is not None:
                self._ask_refresh()  # a joiner first receives a complete current screen
            tasks = {asyncio.ensure_future(self._read_viewer(state)): "read",
                     asyncio.ensure_future(self._write_viewer(state)): "write"}
        if self.agent_ws is not None and self.viewers:
            self.paired.set()
        tasks[asyncio.ensure_future(self.closed.wait())] = "closed"
        tasks[asyncio.ensure_future(self._pair_deadline())] = "unpaired"
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            what = {tasks[t] for t in done}
            if "closed" not in what:
                if side == "technician":
                    self._drop_viewer(viewer)
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
                if side == "technician" and self.viewers and "unpaired" not in what:
                    if self.on_leave is not None:
                        await self.on_leave(viewer)  # the others watch on
                else:
                    await self.on_end(reason, by)
                    await self.close(reason)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if side == "technician":
                self._drop_viewer(viewer)
            with contextlib.suppress(Exception):
                await ws.close(code=1000, message=(self.close_reason or "session ended").encode()[:120])

    async def remove(self, viewer: str, message: str) -> None:
        """Close one viewer's stream (it left, or was removed); the session goes on for the others."""
        state = self.viewers.get(viewer)
        if state is not None:
            self._drop_viewer(viewer)
            with contextlib.suppress(Exception):
                await state.ws.close(code=1000, message=message.encode()[:120])

    def _drop_viewer(self, viewer: str) -> None:
        state = self.viewers.pop(viewer, None)
        if state is None:
            return
        for seq in list(self._holding):
            self._release(seq, viewer)
        state.room.set()
        state.wake.set()

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

    def _note_change(self, scan: stream.RecordScan) -> None:
        """Count a screen update's changed pixels (headers only); enough of them is activity."""
        if not scan.changed_px:
            return  # refinements of already-sent regions and cursor shapes are not changes
        if scan.seq != self._update_seq:
            self._update_seq, self._update_px = scan.seq, 0
        self._update_px += scan.changed_px
        if self._update_px >= self.settings.idle_min_change_px:
            self.last_activity = self.clock()

    # --- agent → technicians ------------------------------------------------------------------

    async def _read_agent(self, ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            eof, records = -1, 1
            if msg.type == WSMsgType.BINARY:
                data: str | bytes = msg.data
                binary = True
                if msg.data[:1] == _MAGIC:  # a screen update (one record or a batch) or a cursor shape
                    scan = stream.scan_records(msg.data)
                    self._note_change(scan)
                    eof, records = scan.end_of_frame, max(1, scan.records)
            elif msg.type == WSMsgType.TEXT:
                data, binary = msg.data, False
                if self.on_transfer is not None and msg.data.startswith(_TRANSFER_PREFIXES):
                    self._note_transfer(msg.data)
                if msg.data.startswith(_SIZED_PREFIXES) and await self._over_cap("agent", msg.data):
                    continue  # refused here: the file is bigger than the server allows
                if self.on_clipboard is not None and msg.data.startswith(_CLIP_PREFIX):
                    self._note_clipboard("agent", msg.data)
                if self.on_chat is not None and msg.data.startswith(_CHAT_PREFIX):
                    self._note_chat(msg.data)
            else:
                return
            shell_output = False
            if self.shell is not None:
                shell_output = self.shell.from_agent(binary, data)
                if shell_output:
                    self.last_activity = self.clock()
            self.bytes_to_technician += len(data)
            if self.recorder is not None and not shell_output:  # the shell has its own recording (.cast)
                self.recorder.add(0, binary, data)
            await self._fan_out(binary, data, eof, records)

    async def _fan_out(self, binary: bool, data: str | bytes, eof: int = -1, records: int = 1) -> None:
        """Screen data to every viewer (droppable per viewer); the rest to the controller, with backpressure.

        ``eof``: the update this binary message ends (:func:`protocol.stream.scan_records`), else -1. ``records``:
        the records it holds; a viewer that does not read batches gets them one a message.
        """
        if isinstance(data, bytes):
            screen, monitors = data[:1] == _MAGIC, False
        else:
            screen = data.startswith(_SCREEN_TEXT_PREFIXES)
            eof, monitors = -1, data.startswith(_MONITORS_PREFIX)
            if monitors:
                self.selected_monitor = _selected(data)
        if not screen:
            await self._to_viewer(self.controller(), binary, data)
            return
        holders: set[str] = set()
        parts: list[bytes] = []
        for state in list(self.viewers.values()):
            if monitors:
                state.resync, state.refresh_asked = False, False
            elif state.resync:
                state.dropped += 1
                continue
            if len(state.items) + state.extra_records >= VIEWER_MAX_ITEMS or state.screen_bytes >= VIEWER_MAX_BYTES:
                self._fell_behind(state)
                continue
            if records > 1 and not state.reads_batches and isinstance(data, bytes):
                parts = parts or stream.split_records(data)  # once for all the viewers that need it
                for part in parts[:-1]:
                    state.items.append((True, part, True, -1, 1))
                state.items.append((True, parts[-1], True, eof, 1))
            else:
                state.items.append((binary, data, True, eof, records))
                state.extra_records += records - 1
            state.screen_bytes += len(data)
            state.wake.set()
            if eof >= 0:
                holders.add(state.name)
        if eof >= 0:
            if holders:
                self._holding[eof] = holders
                while len(self._holding) > MAX_TRACKED_SEQS:
                    self._holding.popitem(last=False)
            else:
                await self._ack_to_agent(eof)  # nobody will draw it: the agent's window must not stall

    def _fell_behind(self, state: _Viewer) -> None:
        """Throw away the viewer's queued screen data; it waits for the next complete screen."""
        kept: collections.deque[tuple[bool, str | bytes, bool, int, int]] = collections.deque()
        for item in state.items:
            if item[2]:
                state.dropped += 1
                if item[3] >= 0:
                    self._release(item[3], state.name)
            else:
                kept.append(item)
        state.items, state.screen_bytes, state.extra_records = kept, 0, 0
        state.resync, state.refresh_asked = True, False
        state.resyncs += 1
        state.wake.set()
        log.info("viewer fell behind; dropping to the next complete screen",
                 extra={"session_id": self.session_id, "viewer": state.name, "resyncs": state.resyncs})

    def _release(self, seq: int, viewer: str) -> None:
        """``viewer`` will not ack ``seq`` (dropped, or gone): when nobody holds it any more, ack it ourselves."""
        holders = self._holding.get(seq)
        if holders is None:
            return
        holders.discard(viewer)
        if not holders:
            del self._holding[seq]
            self._acked[seq] = None
            self._put_agent_nowait(_ack_text(seq))

    async def _to_viewer(self, name: str | None, binary: bool, data: str | bytes) -> None:
        """A reliable message for one viewer: waits while its queue holds too many (backpressure)."""
        if name is not None and name not in self.viewers and name not in self._seen:
            # The agent often speaks first (toolkit.caps): kept for the controller's stream, given to it when it
            # attaches (bounded), instead of dropped — without holding up the other viewers' screens meanwhile.
            early = self._early.setdefault(name, collections.deque())
            if len(early) < self.settings.relay_queue_messages * 4:
                early.append((binary, data))
            else:
                log.warning("message for a controller not attached yet dropped (too many waiting)",
                            extra={"session_id": self.session_id})
            return
        if name is None and not self.paired.is_set():
            await self.paired.wait()  # no roster: the first viewer to attach
            name = self.controller()
        state = self.viewers.get(name) if name is not None else None
        while state is not None and state.reliable >= self.settings.relay_queue_messages:
            state.room.clear()
            await state.room.wait()
            state = self.viewers.get(state.name)
        if state is None:
            log.debug("message for the controller dropped: nobody controls", extra={"session_id": self.session_id})
            return
        if is_bulk(binary, data):
            state.bulk.append((binary, data))
        else:
            state.items.append((binary, data, False, -1, 1))
        state.reliable += 1
        state.wake.set()

    async def _write_viewer(self, state: _Viewer) -> None:
        ws = state.ws
        while True:
            while not state.items and not state.bulk:
                if state.resync and not state.refresh_asked and self.selected_monitor is not None:
                    state.refresh_asked = True  # drained: now a complete screen is worth asking for
                    self._ask_refresh()
                state.wake.clear()
                await state.wake.wait()
                if state.name not in self.viewers:
                    return
            if state.items:
                binary, data, droppable, _eof, records = state.items.popleft()
                state.extra_records -= records - 1
            else:
                (binary, data), droppable = state.bulk.popleft(), False
            if droppable:
                state.screen_bytes -= len(data)
            else:
                state.reliable -= 1
                state.room.set()
            await _send(ws, binary, data)

    def _ask_refresh(self) -> None:
        """Ask the agent for a complete screen (re-select its monitor), at most every REFRESH_MIN_INTERVAL_S."""
        if self._refresh_timer is not None:
            return
        wait = self._refresh_at + REFRESH_MIN_INTERVAL_S - time.monotonic()
        if wait > 0:
            self._refresh_timer = asyncio.get_running_loop().call_later(wait, self._refresh_now)
            return
        self._refresh_now()

    def _refresh_now(self) -> None:
        self._refresh_timer = None
        if self.closed.is_set() or self.selected_monitor is None:
            return
        self._refresh_at = time.monotonic()
        self._put_agent_nowait(stream.encode_text(stream.MonitorSelect(index=self.selected_monitor)))

    def _put_agent_nowait(self, text: str) -> None:
        """A relay-made message (ack, refresh) to the agent; queued without waiting (it goes when there is room)."""
        self._background.spawn(self.to_agent.put((False, text)))

    # --- technicians → agent ------------------------------------------------------------------

    async def _ack_to_agent(self, seq: int) -> None:
        self._acked[seq] = None
        while len(self._acked) > MAX_TRACKED_SEQS:
            self._acked.popitem(last=False)
        await self.to_agent.put((False, _ack_text(seq)))

    async def _on_ack(self, text: str) -> None:
        """A viewer drew an update: pass its ack on once (the first viewer's), or unchanged if unknown."""
        seq = _ack_seq(text)
        if seq is None:
            await self.to_agent.put((False, text))  # not ours to judge: the agent answers garbage itself
            return
        if seq in self._holding:
            for held in list(self._holding):  # acks are cumulative (agent/screen/flow.py): earlier ones too
                del self._holding[held]
                if held == seq:
                    break
            await self._ack_to_agent(seq)
        elif seq not in self._acked:
            await self.to_agent.put((False, text))

    async def _refuse(self, state: _Viewer, input_message: bool) -> None:
        if input_message:
            self.on_input_refused(state.name)
        if state.replies.take(self.clock()):
            what = "input is" if input_message else "this message is"
            error = stream.Error(code="not_controller",
                                 message=f"{state.name} only watches this session: {what} not accepted "
                                         f"(the controlling technician can hand control over)")
            state.items.append((False, stream.encode_text(error), False, -1, 1))
            state.reliable += 1
            state.wake.set()

    async def _read_viewer(self, state: _Viewer) -> None:
        async for msg in state.ws:
            if msg.type == WSMsgType.BINARY:
                data: str | bytes = msg.data
                binary = True
            elif msg.type == WSMsgType.TEXT:
                data, binary = msg.data, False
                if msg.data.startswith(_ACK_PREFIX):
                    await self._on_ack(msg.data)
                    continue
            else:
                return
            if state.name != self.controller():
                await self._refuse(state, not binary and _is_input(msg.data))
                continue
            if not binary:
                if msg.data.startswith(_SIZED_PREFIXES) and await self._over_cap("technician", msg.data):
                    continue  # refused here: the file is bigger than the server allows
                if self.on_clipboard is not None and msg.data.startswith(_CLIP_PREFIX):
                    self._note_clipboard("technician", msg.data)
                if _is_input(msg.data):
                    self.last_activity = self.clock()
                    if self.view_only():
                        self.on_input_refused(state.name)
            if self.shell is not None:
                is_shell, answer = self.shell.from_technician(binary, data)
                if answer is not None:
                    if answer:
                        await self._to_viewer(state.name, False, answer)
                    continue
                if is_shell:
                    self.last_activity = self.clock()  # a keystroke in the shell is activity
            self.bytes_to_agent += len(data)
            if self.recorder is not None:
                self.recorder.add(1, binary, data)
            async with self._to_agent_lock:  # a mark and the message it introduces stay together
                if self._marking and self._marked != state.name:
                    self._marked = state.name
                    await self.to_agent.put((False, viewer_mark(state.name)))
                await self.to_agent.put((binary, data))

    async def _write_agent(self, ws: web.WebSocketResponse) -> None:
        while True:
            item = await self.to_agent.get()
            if item is None:
                return
            binary, data = item
            await _send(ws, binary, data)

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
        await self._to_viewer(self.controller(), False, error)  # to the technician
        if side == "agent":
            await self.to_agent.put((False, error))  # to the agent: stop sending
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
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
            self._refresh_timer = None
        if self.shell is not None:
            await asyncio.to_thread(self.shell.close)
        if self.recorder is not None:
            await self.recorder.close({"ended_reason": reason, "bytes_to_technician": self.bytes_to_technician,
                                       "bytes_to_agent": self.bytes_to_agent, "ended_at": time.time()})


#: Per viewer: queued screen messages / bytes beyond which it is dropped to the next complete screen.
VIEWER_MAX_ITEMS = 256
VIEWER_MAX_BYTES = 8 * 1024 * 1024
#: The relay asks the agent for a complete screen at most this often (joins, viewers that fell behind).
REFRESH_MIN_INTERVAL_S = 1.0
#: Update sequence numbers remembered for ack bookkeeping.
MAX_TRACKED_SEQS = 512
_ACK_PREFIX = '{"type":"ack"'
_MONITORS_PREFIX = '{"type":"monitors"'
#: Agent text that belongs to the screen (every viewer gets it; a viewer that lags may lose it).
_SCREEN_TEXT_PREFIXES = ('{"type":"cursor"', '{"type":"stats"', _MONITORS_PREFIX, '{"type":"error"',
                         '{"type":"chat.message"')
_MAGIC = bytes([stream.MAGIC_VERSION])


def _ack_text(seq: int) -> str:
    return stream.encode_text(stream.Ack(seq=seq))


def _ack_seq(text: str) -> int | None:
    try:
        message = stream.decode_text(text)
    except stream.StreamProtocolError:
        return None
    return message.seq if isinstance(message, stream.Ack) else None


def _selected(text: str) -> int | None:
    try:
        message = stream.decode_text(text)
    except stream.StreamProtocolError:
        return None
    return message.selected if isinstance(message, stream.Monitors) else None


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


async def _send(ws: web.WebSocketResponse, binary: bool, data: bytes | str) -> None:
    """One queued frame out, as the kind it came in."""
    if binary:
        assert isinstance(data, bytes)
        await ws.send_bytes(data)
    else:
        assert isinstance(data, str)
        await ws.send_str(data)
