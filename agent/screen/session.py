"""Run one screen session over a tunnel: stream the screen, take the viewer's input.

Three tasks share the tunnel: the *sender* (capture when the display reports damage
and the viewer's acks leave room — or, where no damage source exists, on
:class:`FlowControl`'s timer —, run capture+encode in a dedicated thread or, armed, in the damage
reader's thread as the report comes, send updates), the *receiver* (acks, input,
monitor switch, quality hints; peer garbage is answered with an ``error`` message,
never raised) and the *cursor* poller (position, and the pointer image via XFixes when
it changed — a binary CURSOR_SHAPE sent before the next position). The session ends when the tunnel closes, when
``stop`` is set, or when the peer keeps sending garbage. The consent layer decides
``mode``; in ``"view"`` mode input is refused and counted, never injected. While a Helpline
prompt is on the user's screen (``input_gate``), every input event is refused and counted too,
checked again right before injection (on the event loop for what the injector sends without waiting on the
X server — keys and pointer: :mod:`agent.xtest_input` —, else in the input thread), and keys and buttons still held
when the prompt appears are released: the technician cannot answer a prompt meant for the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Protocol

from protocol import stream
from protocol.stream import StreamProtocolError

from ..input_injector import InputGate, InputInjector, InputRefused, InputSuspended, PynputInjector
from . import cut
from .capture import Monitor, MssGrabber, ScreenGrabber
from .cursor_shape import CursorImage, CursorShapeSource, open_cursor_shapes
from .damage import Damage, DamageSource, ReaderCapture, open_damage_source
from .flow import FlowControl, FlowSettings
from .pipeline import ScreenPipeline, StepResult
from .pointer import PointerSource, PynputPointer
from .pointer_watch import PointerWatch, open_pointer_watch
from .tunnel import Tunnel, send_all

log = logging.getLogger(__name__)

#: Invalid messages tolerated from the viewer before the session is closed.
MAX_INVALID_MESSAGES = 1000
#: Pointer polling period for cursor messages (at most this often while the pointer moves).
CURSOR_PERIOD_S = 0.033
#: With a pointer watch (X input events): look anyway this often, for warps no event reports.
CURSOR_IDLE_PERIOD_S = 0.5
#: Stats messages at most this often (and only alongside updates: an idle screen sends nothing).
STATS_PERIOD_S = 2.0
#: ``view_only`` error replies: a burst of this many, then at most one per second (every
#: refusal is still counted); a viewer dragging the mouse must not make the agent flood it.
VIEW_ONLY_ERROR_BURST = 5
VIEW_ONLY_ERRORS_PER_S = 1.0
SUSPENDED_MESSAGE = "a Helpline prompt is on the user's screen: remote input is suspended until the user answers it"

Mode = Literal["view", "control"]


class LayoutFollower(Protocol):
    """A grabber whose monitor list can change during a session: X11 (agent/screen/xlayout.py, RandR events
    and a once-a-second check) and Wayland on Mutter (agent/screen/wayland/hotplug.py)."""

    def watch_layout(self, notify: Callable[[], None]) -> None: ...
    def apply_layout(self, shown: int) -> int: ...


@dataclass
class SessionStats:
    """What a session did; returned by :func:`run_screen_session`."""

    updates_sent: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    refreshes_sent: int = 0
    acks: int = 0
    injected_inputs: int = 0
    refused_inputs: int = 0
    #: Of the refused inputs, those refused because a Helpline prompt was on screen.
    suspended_inputs: int = 0
    invalid_messages: int = 0
    max_in_flight: int = 0
    skipped_frames: int = 0
    cursor_shapes_sent: int = 0
    #: Capture backend chosen for the user's session: "x11" or "wayland-mutter" (agent/screen/wayland).
    backend: str = "x11"
    #: "damage" (capture follows the display's damage reports) or "poll" (timer, whole screen).
    capture: str = "poll"
    #: Full-screen grabs (first frames, consistency checks, polling) and damage-limited ones.
    full_grabs: int = 0
    damage_grabs: int = 0
    #: Captures the damage source's reader thread ran as the report came (``ReaderCapture``), of all the grabs.
    reader_grabs: int = 0
    quality: int = 0
    monitor: int = 0
    end_reason: str = ""
    #: Why a control session ran view-only all the same (Wayland: the desktop granted no input), else "".
    view_only_reason: str = ""


class _ReplyBudget:
    """Token bucket: ``burst`` replies at once, then ``rate`` per second."""

    def __init__(self, burst: int, rate: float, now: float) -> None:
        self.burst, self.rate = float(burst), rate
        self.tokens, self.at = float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class _Session:
    def __init__(
        self,
        tunnel: Tunnel,
        mode: Mode,
        grabber: ScreenGrabber,
        injector: InputInjector | None,
        pointer: PointerSource | None,
        shapes: CursorShapeSource | None,
        clock: Callable[[], float],
        settings: FlowSettings | None,
        monitor: int | None,
        input_gate: InputGate | None = None,
        damage: DamageSource | None = None,
        pointer_watch: PointerWatch | None = None,
        lean_jpeg: bool = False,
        batched: bool = False,
    ) -> None:
        self.tunnel = tunnel
        self.pointer_watch = pointer_watch
        self.pointer_moved = asyncio.Event()
        self.damage = damage
        self.damage_waiting = False
        #: The damage source runs armed captures in its reader thread (``ReaderCapture``), and what the last
        #: one gave: (capture time, damage taken, the step's result or its exception).
        self.reader_capture: ReaderCapture | None = damage if isinstance(damage, ReaderCapture) else None
        self.armed_outcome: tuple[float, Damage, StepResult | BaseException] | None = None
        #: The damage-driven sender waits for an ack (the window is full): only then does an ack wake it.
        self.waiting_for_ack = False
        self.next_check = float("-inf")
        self.mode = mode
        self.grabber = grabber
        self.injector = injector
        self.pointer = pointer
        self.shapes = shapes
        #: The pointer image last sent, and whether to send it and the pointer's place again.
        self.last_shape: CursorImage | None = None
        self.cursor_resend = False
        self.clock = clock
        self.stats = SessionStats()
        self.flow = FlowControl(clock(), settings)
        self.monitors: list[Monitor] = grabber.monitors()
        if monitor is None:
            monitor = 1 if len(self.monitors) > 1 else 0
        self.pipeline = ScreenPipeline(grabber, monitor, lean_jpeg=lean_jpeg, batched=batched)
        self.pending_monitor: int | None = monitor
        self.wake = asyncio.Event()
        #: The grabber's monitor list changed (``layout``): applied by the sender between two frames.
        self.layout: LayoutFollower | None = None
        self.layout_pending = False
        self.send_lock = asyncio.Lock()
        self.capture_pool = ThreadPoolExecutor(1, thread_name_prefix="screen-capture")
        self.input_pool = ThreadPoolExecutor(1, thread_name_prefix="screen-input")
        self.last_stats = float("-inf")
        self.view_only_replies = _ReplyBudget(VIEW_ONLY_ERROR_BURST, VIEW_ONLY_ERRORS_PER_S, clock())
        self.suspended_replies = _ReplyBudget(VIEW_ONLY_ERROR_BURST, VIEW_ONLY_ERRORS_PER_S, clock())
        self.input_gate = input_gate
        self._unsubscribe = (input_gate.subscribe(self._prompt_shown)
                             if input_gate is not None and injector is not None else None)
        self.handlers: dict[type, Callable[[stream.StreamMessage, float], object]] = {
            stream.Ack: self._on_ack,
            stream.InputMouse: self._on_input,
            stream.InputKey: self._on_input,
            stream.InputText: self._on_input,
            stream.MonitorSelect: self._on_monitor_select,
            stream.Quality: self._on_quality,
            stream.Error: self._on_peer_error,
        }

    # --- sending ------------------------------------------------------------------------

    async def send(self, data: str | bytes) -> None:
        async with self.send_lock:
            await self.tunnel.send(data)
        self.stats.messages_sent += 1
        self.stats.bytes_sent += len(data)

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """An update's messages in one call down the tunnel's layers (one socket write where the tunnel can)."""
        async with self.send_lock:
            await send_all(self.tunnel, messages)
        self.stats.messages_sent += len(messages)
        self.stats.bytes_sent += sum(len(data) for data in messages)

    async def send_text(self, message: stream.StreamMessage) -> None:
        await self.send(stream.encode_text(message))

    async def send_error(self, code: str, message: str) -> None:
        await self.send_text(stream.Error(code=code, message=message[:2000]))

    async def _sleep_until(self, deadline: float | None) -> None:
        """Wait for a wake-up (ack, input, monitor switch) or the deadline."""
        timeout = None if deadline is None else max(0.0, deadline - self.clock())
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.wake.wait()
        self.wake.clear()

    def on_damage(self) -> None:
        """In the event loop: the damage source has something new."""
        self.damage_waiting = True
        self.wake.set()

    async def sender(self) -> None:
        if self.damage is not None:
            self.stats.capture = "damage"
            await self._damage_sender(self.damage)
        else:
            await self._poll_sender()

    async def _damage_sender(self, damage: DamageSource) -> None:
        """Capture only when damage arrived (or a refresh or consistency check is due) and the window has room.

        No timer drives captures: a still screen wakes nothing but the slow full-frame
        check (``FlowSettings.check_interval_s``), which catches what a server might not
        report. Damage that arrives while the viewer lags accumulates into one grab. Where the
        damage source can (``ReaderCapture``), the capture waiting for the next report is armed in
        its reader thread, which runs it as soon as the report comes (:meth:`_armed_capture`).
        """
        loop = asyncio.get_running_loop()
        blocked = False
        try:
            while True:
                if self.layout_pending:
                    await self._follow_layout()
                if self.pending_monitor is not None:
                    await self._switch_monitor(self.pending_monitor)
                if not self.flow.can_send():
                    blocked = self.waiting_for_ack = True
                    try:
                        await self._sleep_until(None)  # an ack (or a monitor switch) wakes us
                    finally:
                        self.waiting_for_ack = False
                    continue
                now = self.clock()
                full = not self.pipeline.primed or now >= self.next_check
                if not full and not self.damage_waiting:
                    refresh_at = self.pipeline.refresh_due_at()
                    due = self.next_check if refresh_at is None else min(refresh_at, self.next_check)
                    if due > now:
                        if self.reader_capture is None:
                            await self._sleep_until(due)
                            continue
                        captured = await self._armed_capture(due)
                        if captured is None:
                            continue
                        now, seq, batch, result = captured
                        self.stats.reader_grabs += 1
                        self._account(now, batch.full, blocked, batch, result)
                        blocked = False
                        await self._deliver(seq, result)
                        continue
                self.damage_waiting = False
                batch = damage.take()
                full = full or batch.full
                seq = self.flow.next_seq
                result = await loop.run_in_executor(
                    self.capture_pool, self.pipeline.step, now, self.flow.quality, seq, None if full else batch.rects
                )
                self._account(now, full, blocked, batch, result)
                blocked = False
                await self._deliver(seq, result)
        finally:
            if self.reader_capture is not None:
                self.reader_capture.disarm()

    def _account(self, now: float, full: bool, blocked: bool, batch: Damage, result: StepResult) -> None:
        """A damage-driven capture's bookkeeping, wherever it ran: reports folded into the first capture after the
        window was full count as skipped frames; a full grab sets the next consistency check."""
        if blocked:
            self.flow.skipped += max(0, batch.reports - 1)
        if full:
            self.next_check = now + self.flow.settings.check_interval_s
            self.stats.full_grabs += 1
        elif result.grabbed_px:
            self.stats.damage_grabs += 1

    async def _armed_capture(self, due: float) -> tuple[float, int, Damage, StepResult] | None:
        """Arm the next capture in the damage source's reader thread and sleep until ``due``, or until it ran:
        (capture time, seq, the damage taken, the step's result).

        None: woken before any report came (a deadline, a monitor switch, damage the loop saw first), the job
        taken back; the sender goes round again. A job that had started is waited for: its result is a frame
        like any other (a full damage batch — a lost connection, a screen resize — was a full grab).
        """
        reader = self.reader_capture
        assert reader is not None
        loop = asyncio.get_running_loop()
        quality, seq = self.flow.quality, self.flow.next_seq
        self.armed_outcome = None

        def done(outcome: tuple[float, Damage, StepResult | BaseException]) -> None:  # on the loop
            self.armed_outcome = outcome
            self.wake.set()

        def job(batch: Damage) -> None:  # in the reader thread
            now = self.clock()
            outcome: StepResult | BaseException
            try:
                outcome = self.pipeline.step(now, quality, seq, None if batch.full else batch.rects)
            except BaseException as exc:  # handed to the sender, which fails the session as the executor path would
                outcome = exc
            with contextlib.suppress(RuntimeError):  # the loop closed: the session is gone
                loop.call_soon_threadsafe(done, (now, batch, outcome))

        reader.arm(job)
        await self._sleep_until(due)
        if self.armed_outcome is None and reader.disarm():
            return None
        while self.armed_outcome is None:  # it runs: the result is on its way
            await self._sleep_until(None)
        now, batch, outcome = self.armed_outcome
        self.armed_outcome = None
        if isinstance(outcome, BaseException):
            raise outcome
        return now, seq, batch, outcome

    async def _poll_sender(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.layout_pending:
                await self._follow_layout()
            if self.pending_monitor is not None:
                await self._switch_monitor(self.pending_monitor)
            now = self.clock()
            at = self.flow.next_capture_at(now)
            if at is None or at > now:
                await self._sleep_until(at)
                continue
            seq = self.flow.next_seq
            result: StepResult = await loop.run_in_executor(
                self.capture_pool, self.pipeline.step, now, self.flow.quality, seq
            )
            self.flow.on_captured(now, result.changed)
            self.stats.full_grabs += 1
            await self._deliver(seq, result)

    async def _deliver(self, seq: int, result: StepResult) -> None:
        """Send one step's update (if any) and account for it."""
        update = result.update
        if update is None:
            return
        await self.send_many(update.messages)
        sent_at = self.clock()
        self.flow.on_sent(seq, update.nbytes, sent_at)
        self.stats.updates_sent += 1
        self.stats.refreshes_sent += update.refresh
        self.stats.max_in_flight = self.flow.max_in_flight_seen
        if sent_at - self.last_stats >= STATS_PERIOD_S:
            self.last_stats = sent_at
            await self.send_text(
                stream.Stats(
                    updates=self.stats.updates_sent, bytes=self.stats.bytes_sent, quality=self.flow.quality,
                    in_flight=self.flow.in_flight, skipped=self.flow.skipped, rtt_ms=self.flow.rtt_s * 1000,
                    backend=self.stats.backend,
                )
            )

    def on_layout(self) -> None:
        """In the event loop: the monitors changed (a hot-plug); the sender applies it before its next frame."""
        self.layout_pending = True
        self.wake.set()

    async def _follow_layout(self) -> None:
        """The new list, and the monitor shown before (or the primary, if it is gone) switched to as a
        ``monitor.select`` would: a ``monitors`` message, then a full frame."""
        self.layout_pending = False
        assert self.layout is not None
        index = self.layout.apply_layout(self.pipeline.monitor)
        log.info("screen session: the monitors changed; showing monitor %d (was %d)", index, self.pipeline.monitor)
        await self._switch_monitor(index)

    async def _switch_monitor(self, index: int) -> None:
        self.pending_monitor = None
        self.monitors = self.grabber.monitors()
        if index >= len(self.monitors):
            await self.send_error("bad_monitor", f"monitor {index} does not exist")
            return
        self.pipeline.reset(index)
        self.damage_waiting = False
        if self.damage is not None:
            self.damage.take()  # the new monitor's first step reads it whole anyway
        self.stats.monitor = index
        infos = [stream.MonitorInfo(m.x, m.y, m.w, m.h, m.primary) for m in self.monitors[: stream.MAX_MONITORS]]
        await self.send_text(stream.Monitors(monitors=infos, selected=index))
        self.cursor_resend = True  # shapes are sent on change only: a viewer that joined now has none
        self.last_stats = float("-inf")  # ... and the stats (backend, quality) go with the first update
        self.pointer_moved.set()

    async def _send_shape(self, shape: CursorImage) -> None:
        await self.send(stream.pack_cursor_shape(
            w=shape.w, h=shape.h, hot_x=shape.hot_x, hot_y=shape.hot_y, rgba=shape.rgba,
            seq=self.stats.cursor_shapes_sent % (stream.MAX_SEQ + 1), monitor=self.pipeline.monitor,
        ))
        self.stats.cursor_shapes_sent += 1

    def _read_pointer(self, pointer: PointerSource) -> tuple[CursorImage | None, tuple[int, int] | None]:
        """In the input thread: the cursor image if it changed, and where the pointer is (one hand-off for both)."""
        return (self.shapes.changed_shape() if self.shapes is not None else None), pointer.position()

    async def cursor(self) -> None:
        pointer = self.pointer
        if pointer is None:
            return
        loop = asyncio.get_running_loop()
        last: tuple[int, int, bool] | None = None
        while True:
            if self.cursor_resend:  # a full screen went out (a joiner, a lagging viewer): shape and place again
                self.cursor_resend = False
                last = None
                if self.last_shape is not None:
                    await self._send_shape(self.last_shape)
            shape, position = await loop.run_in_executor(self.input_pool, self._read_pointer, pointer)
            if shape is not None:
                self.last_shape = shape
                await self._send_shape(shape)
            if position is not None:
                mon = self.monitors[self.pipeline.monitor]
                x, y = position[0] - mon.x, position[1] - mon.y
                state = (x, y, 0 <= x < mon.w and 0 <= y < mon.h)
                if state != last:
                    last = state
                    await self.send_text(stream.Cursor(x=x, y=y, visible=state[2]))
            await asyncio.sleep(CURSOR_PERIOD_S)
            if self.pointer_watch is not None:  # sleep until the pointer moves or its shape changes
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CURSOR_IDLE_PERIOD_S - CURSOR_PERIOD_S):
                        await self.pointer_moved.wait()
                self.pointer_moved.clear()

    # --- receiving ----------------------------------------------------------------------

    async def receiver(self) -> None:
        while True:
            data = await self.tunnel.recv()
            now = self.clock()
            if isinstance(data, (bytes, bytearray, memoryview)):
                await self._invalid("binary messages are agent → viewer only")
                continue
            try:
                message = stream.decode_text(data)
            except StreamProtocolError as exc:
                await self._invalid(exc.message)
                continue
            handler = self.handlers.get(type(message))
            if handler is None:
                await self._invalid(f"{type(message).__name__} is not accepted from the viewer")
                continue
            outcome = handler(message, now)
            if asyncio.iscoroutine(outcome):
                await outcome

    async def _invalid(self, reason: str) -> None:
        self.stats.invalid_messages += 1
        log.info("invalid message from viewer: %s", reason)
        if self.stats.invalid_messages > MAX_INVALID_MESSAGES:
            raise _PeerMisbehaving(f"more than {MAX_INVALID_MESSAGES} invalid messages")
        await self.send_error(StreamProtocolError.code, reason)

    def _on_ack(self, message: stream.StreamMessage, now: float) -> None:
        assert isinstance(message, stream.Ack)
        if self.flow.on_ack(message.seq, now):
            self.stats.acks += 1
            # The polling sender paces on acks; the damage-driven one needs them only while its window is full
            # (an ack wakes it then, not after every update: one event-loop round a frame fewer).
            if self.damage is None or self.waiting_for_ack:
                self.wake.set()

    async def _on_input(self, message: stream.StreamMessage, now: float) -> None:
        assert isinstance(message, (stream.InputMouse, stream.InputKey, stream.InputText))
        if self.input_gate is not None and self.input_gate.suspended():
            await self._refuse_suspended(now)
            return
        if self.mode != "control" or self.injector is None:
            self.stats.refused_inputs += 1
            if self.view_only_replies.take(now):
                await self.send_error("view_only", self.stats.view_only_reason
                                      or "this session is view-only: input is not accepted")
            return
        monitor = self.monitors[self.pipeline.monitor]
        try:
            if not self._inject_now(message, monitor):
                await asyncio.get_running_loop().run_in_executor(self.input_pool, self._inject, message, monitor)
        except InputSuspended:
            await self._refuse_suspended(now)
            return
        except InputRefused as exc:
            self.stats.refused_inputs += 1
            await self.send_error("input_refused", str(exc))
            return
        self.stats.injected_inputs += 1
        if self.damage is None:  # the polling sender captures faster after input; damage wakes the other
            self.flow.on_input(self.clock())
            self.wake.set()

    def _inject_now(self, message: stream.InputMessage, monitor: Monitor) -> bool:
        """On the event loop, where the injector can without blocking (keys, pointer): the gate, then the injection."""
        assert self.injector is not None
        if self.input_gate is not None and self.input_gate.suspended():
            raise InputSuspended(SUSPENDED_MESSAGE)
        return self.injector.inject_now(message, monitor)

    def _inject(self, message: stream.InputMessage, monitor: Monitor) -> None:
        """In the input thread: the last check of the gate, then the injection."""
        assert self.injector is not None
        if self.input_gate is not None and self.input_gate.suspended():
            raise InputSuspended(SUSPENDED_MESSAGE)
        self.injector.inject(message, monitor)

    async def _refuse_suspended(self, now: float) -> None:
        self.stats.refused_inputs += 1
        self.stats.suspended_inputs += 1
        if self.suspended_replies.take(now):
            log.info("remote input refused: a Helpline prompt is on screen")
            await self.send_error("input_suspended", SUSPENDED_MESSAGE)

    def _prompt_shown(self) -> None:
        """A prompt appeared: let go of every key and button the technician holds (in the input thread)."""
        if self.injector is not None:
            with contextlib.suppress(RuntimeError):  # the pool is already shut down: the session is ending
                self.input_pool.submit(self.injector.release_all)

    def _on_monitor_select(self, message: stream.StreamMessage, now: float) -> None:
        assert isinstance(message, stream.MonitorSelect)
        self.pending_monitor = message.index
        self.wake.set()

    def _on_quality(self, message: stream.StreamMessage, now: float) -> None:
        assert isinstance(message, stream.Quality)
        self.flow.set_hint(message.hint)

    def _on_peer_error(self, message: stream.StreamMessage, now: float) -> None:
        assert isinstance(message, stream.Error)
        log.info("viewer reported error %s: %s", message.code, message.message[:200])

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.injector is not None:
            try:
                self.injector.release_all()
            except Exception:
                log.exception("releasing held keys failed")
        self.capture_pool.shutdown(wait=True, cancel_futures=True)
        if self.reader_capture is not None:  # a capture the reader thread started must end before the grabber does
            self.reader_capture.disarm()
            if not self.reader_capture.wait_idle(30.0):
                log.warning("screen session: a capture in the damage reader did not end within 30 s")
        self.input_pool.shutdown(wait=True, cancel_futures=True)
        self.stats.max_in_flight = self.flow.max_in_flight_seen
        self.stats.skipped_frames = self.flow.skipped
        self.stats.quality = self.flow.quality


class _PeerMisbehaving(Exception):
    pass


async def _run_wayland(tunnel: Tunnel, *, mode: Mode, injector: InputInjector | None, clock: Callable[[], float],
                       stop: asyncio.Event | None, settings: FlowSettings | None, monitor: int | None,
                       input_gate: InputGate | None, lean_jpeg: bool, batched: bool) -> SessionStats:
    """The session on Mutter's remote-desktop API or the portal; it also ends when the compositor closes the cast."""
    from .wayland.backend import INPUT_NOT_GRANTED, WaylandUnavailable, open_wayland

    try:
        wayland = await open_wayland()
    except WaylandUnavailable as exc:
        # No X11 fallback: under Wayland an X grab shows XWayland windows at best. The viewer is told why
        # (also when the person cancelled the portal's own dialog: code portal_cancelled).
        log.warning("screen session: the Wayland desktop cannot be shared: %s", exc)
        await tunnel.send(stream.encode_text(stream.Error(code=exc.code, message=str(exc)[:2000])))
        reason = "portal cancelled" if exc.code == "portal_cancelled" else "backend unavailable"
        return SessionStats(backend=exc.backend, end_reason=f"{reason}: {exc}")
    notice = wayland.input_notice() if mode == "control" else ""
    if notice:  # the desktop granted no (or not all) input: the technician learns it before the first frame
        log.warning("screen session on %s: %s", wayland.name, notice)
        await tunnel.send(stream.encode_text(stream.Error(code=INPUT_NOT_GRANTED, message=notice[:2000])))
        if wayland.view_only:
            mode = "view"
    ended = asyncio.Event()
    watchers = [asyncio.create_task(wayland.session.closed.wait())]
    if stop is not None:
        watchers.append(asyncio.create_task(stop.wait()))

    async def either() -> None:
        await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        ended.set()

    relay = asyncio.create_task(either())
    try:
        stats = await run_screen_session(
            tunnel, mode=mode, grabber=wayland.capture, damage=wayland.capture, layout=wayland.capture, clock=clock,
            stop=ended,
            # The streams' cursor metadata (native reader): position, image and wake-ups, as XFixes/XInput on X11.
            pointer=wayland.cursor, cursor_shapes=wayland.cursor, pointer_watch=wayland.cursor,
            injector=injector if injector is not None or mode != "control" else wayland.injector(),
            settings=settings, monitor=monitor, input_gate=input_gate, backend_name=wayland.name,
            view_only_reason=notice if mode == "view" else "", lean_jpeg=lean_jpeg, batched=batched,
        )
    finally:
        relay.cancel()
        for watcher in watchers:
            watcher.cancel()
        await wayland.close()
    stats.backend = wayland.name
    if stats.end_reason == "stopped" and wayland.session.closed.is_set() and not (stop and stop.is_set()):
        stats.end_reason = "the compositor closed the remote-desktop session"
    if notice:
        stats.end_reason = f"{stats.end_reason}; {INPUT_NOT_GRANTED}: {notice}"
    log.info("screen session on %s ended: %s (%d PipeWire frames read by %s)", wayland.name, stats.end_reason,
             wayland.capture.frames, wayland.reader)
    return stats


async def run_screen_session(
    tunnel: Tunnel,
    *,
    mode: Mode,
    display: str | None = None,
    injector: InputInjector | None = None,
    grabber: ScreenGrabber | None = None,
    clock: Callable[[], float] = time.monotonic,
    stop: asyncio.Event | None = None,
    pointer: PointerSource | None = None,
    cursor_shapes: CursorShapeSource | None = None,
    settings: FlowSettings | None = None,
    monitor: int | None = None,
    input_gate: InputGate | None = None,
    damage: DamageSource | None = None,
    pointer_watch: PointerWatch | None = None,
    backend: Literal["x11", "wayland"] | None = None,
    backend_name: str | None = None,
    view_only_reason: str = "",
    layout: LayoutFollower | None = None,
    lean_jpeg: bool = False,
    batched: bool = False,
) -> SessionStats:
    """Stream ``display`` over ``tunnel`` until it closes or ``stop`` is set.

    Real grabber/injector/pointer are created for ``display`` unless given (an injector
    only in ``"control"`` mode; the pointer poller and the XFixes cursor shapes — where
    available — only with the real grabber). ``input_gate`` (the consent UI's prompt guard)
    suspends remote input while a Helpline prompt is on screen. ``damage`` drives capture by
    the display's damage reports; with the real grabber an X DAMAGE source is opened unless
    given (None where the server lacks DAMAGE: the session polls, and says so in the log);
    ``pointer_watch`` (opened with the real pointer unless given) wakes the cursor poller on
    pointer motion and shape changes instead of polling every 33 ms.

    Without a grabber, ``backend`` (default: chosen from the user's session, see
    :func:`agent.screen.wayland.backend.choose_backend`) decides where the real parts come from:
    X11 as above, or Mutter's remote-desktop session on Wayland (its PipeWire stream is both the
    grabber and the damage source, input goes through the same session; no separate pointer).
    ``backend_name`` names a given grabber's backend in the stats the viewer gets (default "x11").
    ``view_only_reason`` (with mode "view"): why, sent with each refusal instead of the plain view-only one.
    ``layout``: the grabber, when its monitor list can change during the session (it says when; the viewer
    gets the new list and is kept on the same monitor, or moved to the primary when that one is gone).
    ``lean_jpeg``: every viewer rebuilds libjpeg's standard tables (the offer said so): JPEGs go without them.
    ``batched``: every viewer reads batched updates (the offer said so): an update's records go in one message.
    """
    if mode not in ("view", "control"):
        raise ValueError(f"mode must be 'view' or 'control', not {mode!r}")
    if grabber is None:
        from .wayland.backend import choose_backend

        chosen = backend or choose_backend(display=display)
        log.info("screen session backend: %s; pictures over FILLs %s", chosen,
                 "cut to their differing pixels" if cut.AVAILABLE else "whole (agent.screen._cut not built)")
        if chosen == "wayland":
            return await _run_wayland(tunnel, mode=mode, injector=injector, clock=clock, stop=stop,
                                      settings=settings, monitor=monitor, input_gate=input_gate,
                                      lean_jpeg=lean_jpeg, batched=batched)
    own_grabber, own_pointer, own_injector, own_shapes = grabber is None, False, False, False
    own_damage = own_watch = False
    if grabber is None:
        grabber = mss_grabber = MssGrabber(display)
        if layout is None:
            layout = mss_grabber  # RandR monitors followed during the session (agent/screen/xlayout.py)
        if damage is None:
            damage = open_damage_source(display)
            own_damage = damage is not None
        if pointer is None:
            pointer, own_pointer = PynputPointer(display), True
        if pointer_watch is None:
            pointer_watch = open_pointer_watch(display)
            own_watch = pointer_watch is not None
        if cursor_shapes is None:
            cursor_shapes = open_cursor_shapes(display)
            own_shapes = cursor_shapes is not None
    if mode == "control" and injector is None:
        injector, own_injector = PynputInjector(display), True
    session = _Session(tunnel, mode, grabber, injector if mode == "control" else None, pointer, cursor_shapes,
                       clock, settings, monitor, input_gate, damage, pointer_watch, lean_jpeg, batched)
    if backend_name:
        session.stats.backend = backend_name
    session.stats.view_only_reason = view_only_reason
    if layout is not None:
        layout_loop = asyncio.get_running_loop()
        session.layout = layout

        def relaid() -> None:  # from whichever thread staged the new list
            layout_loop.call_soon_threadsafe(session.on_layout)

        layout.watch_layout(relaid)
    if damage is not None:
        loop = asyncio.get_running_loop()

        def notify() -> None:  # from the damage source's thread
            loop.call_soon_threadsafe(session.on_damage)

        damage.start(notify)
    if pointer_watch is not None:
        watch_loop = asyncio.get_running_loop()

        def moved() -> None:  # from the pointer watch's thread
            watch_loop.call_soon_threadsafe(session.pointer_moved.set)

        pointer_watch.start(moved)
    tasks: dict[asyncio.Task[object], str] = {
        asyncio.create_task(session.sender(), name="screen-sender"): "sender",
        asyncio.create_task(session.receiver(), name="screen-receiver"): "receiver",
        asyncio.create_task(session.cursor(), name="screen-cursor"): "cursor",
    }
    if stop is not None:
        tasks[asyncio.create_task(stop.wait(), name="screen-stop")] = "stop"
    try:
        while True:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finished = [t for t in done if not (tasks[t] == "cursor" and t.exception() is None)]
            for task in done:
                if tasks[task] == "cursor" and task.exception() is None:
                    del tasks[task]  # no pointer source: nothing to poll
            if finished:
                break
        task = finished[0]
        exc = task.exception()
        name = tasks[task]
        if exc is None:
            session.stats.end_reason = "stopped" if name == "stop" else f"{name} ended"
        elif type(exc).__name__.startswith("ConnectionClosed"):
            session.stats.end_reason = "tunnel closed"
            log.info("screen session: tunnel closed (%s)", exc)
        else:
            session.stats.end_reason = f"{name} failed: {exc}"
            log.warning("screen session ended: %s failed: %r", name, exc)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(session.close)
        if own_damage and damage is not None:
            damage.close()
        if own_watch and pointer_watch is not None:
            pointer_watch.close()
        if own_grabber:
            grabber.close()
        if own_pointer and pointer is not None:
            pointer.close()
        if own_shapes and cursor_shapes is not None:
            cursor_shapes.close()
        if own_injector and injector is not None:
            injector.close()
    return session.stats
