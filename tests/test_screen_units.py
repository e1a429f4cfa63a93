"""Sans-I/O parts of the screen pipeline: tiles, encoders, flow control, pipeline and session with fakes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from agent.screen import FlowControl, FlowSettings, Monitor, run_screen_session
from agent.screen.encoder import DecodeError, decode, encode_jpeg, encode_png, encode_zlib, jpeg_params
from agent.screen.pipeline import ScreenPipeline
from agent.screen.tiles import Rect, changed_bounds, compare, dirty_tiles, fill_rows, merge_tiles
from protocol import stream
from protocol.stream import Encoding, Kind


def frame(h: int = 200, w: int = 300, value: int = 0) -> np.ndarray:
    return np.full((h, w, 4), value, dtype=np.uint8)


def test_dirty_tiles_marks_only_changed_tiles_including_ragged_edges() -> None:
    """One changed pixel dirties exactly its tile, also in the partial last row/column."""
    a, b = frame(), frame()
    b[199, 299, 1] = 9
    b[10, 70, 0] = 1
    mask = dirty_tiles(a, b)
    assert mask.shape == (4, 5)
    assert sorted(zip(*np.nonzero(mask))) == [(0, 1), (3, 4)]


def test_merge_tiles_builds_rows_then_stacks_equal_runs() -> None:
    """Adjacent dirty tiles merge into rectangles clipped to the frame."""
    mask = np.zeros((4, 5), dtype=bool)
    mask[0:2, 1:3] = True
    mask[3, 4] = True
    assert merge_tiles(mask, 300, 200) == [Rect(64, 0, 128, 128), Rect(256, 192, 44, 8)]


def test_scattered_changes_are_coalesced_into_few_jpeg_rects() -> None:
    """Many scattered dirty tiles become one strip per tile row, sent as JPEG (motion, not typing)."""
    rng = np.random.default_rng(9)
    screen = rng.integers(0, 256, (256, 1024, 4), dtype=np.uint8)
    pipe = ScreenPipeline(FakeGrabber(screen), 1)
    assert pipe.step(0.0, 50, 1).update is not None
    screen[0::128, 0::128] ^= 0xFF  # a checkerboard of 32 isolated tiles
    screen[64::128, 64::128] ^= 0xFF
    update = pipe.step(0.1, 50, 2).update
    assert update is not None
    rects = [stream.unpack_update(m) for m in update.messages]
    # One strip per tile row, cut to the changed pixels (the first to the last flipped one).
    assert len(rects) == 4 and all(r.encoding is Encoding.JPEG and r.w >= 897 and r.h == 1 for r in rects)
    mask = np.zeros((2, 4), dtype=bool)
    mask[0, [0, 2]] = True
    assert fill_rows(mask).tolist() == [[True, True, True, False], [False, False, False, False]]


def test_lossless_encoders_round_trip_exactly() -> None:
    """PNG and zlib payloads decode to the exact BGR pixels; JPEG to the right shape."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    for encoding, payload in ((Encoding.PNG, encode_png(pixels)), (Encoding.ZLIB, encode_zlib(pixels))):
        assert np.array_equal(decode(encoding, payload, 53, 37), pixels[:, :, :3])
    bgr = np.ascontiguousarray(pixels[:, :, :3])  # the reference viewer's snapshot: BGR, no padding byte
    assert np.array_equal(decode(Encoding.PNG, encode_png(bgr), 53, 37), bgr)
    assert decode(Encoding.JPEG, encode_jpeg(pixels, 70), 53, 37).shape == (37, 53, 3)
    with pytest.raises(DecodeError):
        decode(Encoding.PNG, encode_png(pixels), 52, 37)
    with pytest.raises(DecodeError):
        decode(Encoding.JPEG, b"garbage", 5, 5)


def test_flow_window_is_bounded_by_updates_and_bytes_and_acks_are_cumulative() -> None:
    """Updates beyond the window wait for an ack; a large update closes the byte window; an ack covers earlier ones."""
    flow = FlowControl(0.0)
    n = flow.settings.max_in_flight
    assert n > 2 and flow.next_capture_at(0.0) is not None
    for _ in range(n):
        flow.on_sent(flow.next_seq, 100, 0.0)
    assert flow.next_capture_at(0.01) is None and not flow.can_send()
    assert not flow.on_ack(77, 0.02)
    assert flow.on_ack(n, 0.1)  # cumulative: 1..n-1 are acknowledged with it
    assert flow.in_flight == 0 and flow.bytes_in_flight == 0 and flow.skipped > 0 and flow.max_in_flight_seen == n
    assert not flow.on_ack(2, 0.2)
    flow.on_sent(flow.next_seq, flow.settings.max_bytes_in_flight, 1.0)  # one update is always allowed
    assert flow.in_flight == 1 and not flow.can_send()


def test_flow_window_grows_with_latency_not_with_a_slow_viewer() -> None:
    """A far viewer that draws fast gets the whole window; one that is slow to draw gets 2 (no queue in front of it)."""
    far = FlowControl(0.0)
    t = 0.0
    for _ in range(8):  # 100 ms away, 10 ms per update: acks arrive 10 ms apart
        seqs = []
        for _ in range(4):
            seqs.append(far.next_seq)
            far.on_sent(seqs[-1], 1000, t)
        for i, seq in enumerate(seqs):
            far.on_ack(seq, t + 0.1 + 0.01 * i)
        t += 1.0
    assert far.window == far.settings.max_in_flight
    slow = FlowControl(0.0)
    t = 0.0
    for _ in range(8):  # next door, but 150 ms per update: acks 150 ms apart
        seqs = [slow.next_seq, slow.next_seq + 1]
        slow.on_sent(seqs[0], 1000, t)
        slow.on_sent(seqs[1], 1000, t)
        slow.on_ack(seqs[0], t + 0.15)
        slow.on_ack(seqs[1], t + 0.30)
        t += 1.0
    assert slow.window == 2
    assert slow.rtt_s > 0.2 and slow.quality >= 60  # the queueing in the round trip does not cost quality


def test_capture_rate_is_fast_after_input_and_slow_when_still() -> None:
    """Captures come every few ms after input or change, and rarely on a still screen."""
    s = FlowSettings()
    flow = FlowControl(0.0, s)
    flow.on_captured(10.0, changed=False)
    assert flow.interval(10.0) == s.idle_interval_s
    flow.on_input(10.0)
    assert flow.interval(10.01) == s.input_interval_s
    flow.on_captured(10.5, changed=True)
    assert flow.interval(10.6) == s.active_interval_s
    assert flow.interval(20.0) == s.idle_interval_s


def test_quality_drops_over_budget_and_follows_hints() -> None:
    """Quality falls when the byte rate exceeds the budget, and stays within the hint's range."""
    flow = FlowControl(0.0, FlowSettings(max_bytes_per_s=1000))
    start = flow.quality
    for i in range(5):
        seq = flow.next_seq
        flow.on_sent(seq, 10_000, i * 0.01)
        flow.on_ack(seq, i * 0.01 + 0.005)
    assert flow.quality < start
    flow.set_hint("high")
    assert flow.quality >= 60


class FakeGrabber:
    """A grabber returning whatever frame the test sets."""

    def __init__(self, *frames: np.ndarray) -> None:
        self.frames = list(frames)
        self.current = 0
        self.closed = False

    def monitors(self) -> list[Monitor]:
        return [Monitor(0, 0, f.shape[1], f.shape[0]) for f in self.frames[:1]] + [
            Monitor(0, 0, f.shape[1], f.shape[0]) for f in self.frames
        ]

    def grab(self, index: int) -> np.ndarray:
        return self.frames[max(index - 1, 0)].copy()

    def close(self) -> None:
        self.closed = True


def test_pipeline_sends_full_then_diff_then_lossless_refresh() -> None:
    """First step sends everything, a change sends its pixels, and the lossy tiles are refreshed after settling."""
    rng = np.random.default_rng(5)
    screen = rng.integers(0, 256, (128, 192, 4), dtype=np.uint8)
    grabber = FakeGrabber(screen)
    pipe = ScreenPipeline(grabber, 1, settle_s=0.3, busy_settle_s=0.3)  # no postponing during motion here
    first = pipe.step(0.0, 60, 1).update
    assert first is not None and first.lossy
    assert pipe.step(0.1, 60, 2).update is None  # unchanged, not settled yet
    screen[70:80, 70:80] = 255
    second = pipe.step(0.2, 60, 2).update
    assert second is not None
    rects = [stream.unpack_update(m) for m in second.messages]
    assert [(r.x, r.y, r.w, r.h) for r in rects] == [(70, 70, 10, 10)]  # cut to the changed pixels
    assert rects[-1].end_of_frame and all(r.seq == 2 for r in rects)
    refresh = pipe.step(0.45, 60, 3).update  # tiles sent at t=0 settled; the t=0.2 tile has not
    assert refresh is not None and refresh.refresh
    refreshed = [stream.unpack_update(m) for m in refresh.messages]
    assert all(r.kind is Kind.REFRESH and r.encoding is Encoding.PNG for r in refreshed)
    assert (64, 64) not in [(r.x, r.y) for r in refreshed]


def test_refresh_waits_while_motion_continues_and_follows_once_it_stops() -> None:
    """A still lossy tile is refreshed settle_s after motion stops, or busy_settle_s into ongoing motion."""
    rng = np.random.default_rng(6)
    screen = rng.integers(0, 256, (64, 256, 4), dtype=np.uint8)
    grabber = FakeGrabber(screen)
    pipe = ScreenPipeline(grabber, 1, settle_s=0.3, busy_settle_s=1.0)
    assert pipe.step(0.0, 60, 1).update is not None  # all four tiles lossy
    for i, now in enumerate((0.2, 0.4, 0.6, 0.8)):  # tile 3 keeps moving; tiles 0..2 are still
        screen[:, 192:] = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
        update = pipe.step(now, 60, 2 + i).update
        assert update is not None and not update.refresh
    assert pipe.refresh_due_at() == pytest.approx(1.1, abs=1e-3)  # no timer during motion: 0.3 after it stops
    screen[:, 192:] = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    update = pipe.step(1.01, 60, 6).update
    assert update is not None and update.refresh
    refreshed = [stream.unpack_update(m) for m in update.messages if stream.unpack_update(m).kind is Kind.REFRESH]
    assert [(r.x, r.w) for r in refreshed] == [(0, 192)]
    assert pipe.refresh_due_at() == pytest.approx(1.31, abs=1e-3)  # motion stopped at 1.01: settle_s later


def test_a_large_change_counts_as_motion_however_late_it_comes() -> None:
    """A slow viewer spaces motion steps beyond settle_s: a large change still postpones the refresh."""
    rng = np.random.default_rng(8)
    screen = rng.integers(0, 256, (128, 1024, 4), dtype=np.uint8)  # 2 x 16 tiles
    pipe = ScreenPipeline(FakeGrabber(screen), 1, settle_s=0.3, busy_settle_s=2.0)
    assert pipe.step(0.0, 60, 1).update is not None
    screen[:, 128:] = rng.integers(0, 256, (128, 896, 4), dtype=np.uint8)  # 28 tiles: not small
    late = pipe.step(1.0, 60, 2).update
    assert late is not None and not late.refresh  # the 4 still tiles wait for busy_settle_s
    quiet = pipe.step(1.4, 60, 3).update  # nothing changed since 1.0: motion stopped
    assert quiet is not None and quiet.refresh


def test_refresh_during_motion_is_rationed_oldest_tiles_first() -> None:
    """While motion continues, settled tiles are refreshed within the tiles-per-second budget, oldest first."""
    rng = np.random.default_rng(7)
    screen = rng.integers(0, 256, (64, 256, 4), dtype=np.uint8)
    grabber = FakeGrabber(screen)
    pipe = ScreenPipeline(grabber, 1, settle_s=0.1, busy_settle_s=0.5, busy_refresh_tiles_per_s=1.0)
    assert pipe.step(0.0, 60, 1).update is not None  # four lossy tiles
    refreshed: list[tuple[int, float]] = []
    now, seq = 0.0, 2
    while now < 3.0:
        now = round(now + 0.05, 2)
        screen[:, 192:] = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)  # tile 3 never stops
        if now == 0.25:
            screen[:, 64:128] = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)  # tile 1 changes once more
        update = pipe.step(now, 60, seq).update
        seq += 1
        assert update is not None
        for m in update.messages:
            r = stream.unpack_update(m)
            if r.kind is Kind.REFRESH:
                refreshed += [(r.x // 64 + i, now) for i in range(r.w // 64)]
    # One tile per second: 0 once settled (0.5 s), then 2 (older than 1), then 1; never the moving 3.
    assert refreshed == [(0, 0.5), (2, 1.5), (1, 2.5)]


def test_high_quality_steps_keep_full_colour_resolution() -> None:
    """The top of the quality ladder is 4:4:4 (saturated colour edges survive), the bottom 4:2:0."""
    assert jpeg_params(75)[1] == "444" and jpeg_params(40) == (40, "420")
    bars = np.zeros((16, 64, 4), dtype=np.uint8)
    bars[:, ::2, 2] = 255  # alternating red and black columns: chroma at full resolution
    red = lambda q: decode(Encoding.JPEG, encode_jpeg(bars, q), 64, 16)[:, :, 2].astype(int)  # noqa: E731
    assert np.abs(red(75) - bars[:, :, 2]).mean() < np.abs(red(55) - bars[:, :, 2]).mean()


class MemoryTunnel:
    """In-memory tunnel: the test plays the viewer through two queues."""

    def __init__(self) -> None:
        self.to_agent: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.from_agent: asyncio.Queue[str | bytes] = asyncio.Queue()

    async def send(self, data: str | bytes) -> None:
        await self.from_agent.put(data)

    async def recv(self) -> str | bytes:
        item = await self.to_agent.get()
        if item is None:
            raise ConnectionError("closed")
        return item

    async def next_text(self, kind: type) -> object:
        async with asyncio.timeout(5):
            while True:
                data = await self.from_agent.get()
                if isinstance(data, str):
                    message = stream.decode_text(data)
                    if isinstance(message, kind):
                        return message


class RecordingInjector:
    def __init__(self) -> None:
        self.events: list[object] = []

    def inject(self, message: object, monitor: Monitor) -> None:
        self.events.append(message)

    def inject_now(self, message: object, monitor: Monitor) -> bool:
        return False

    def release_all(self) -> None:
        self.events.append("released")

    def close(self) -> None:
        pass


async def test_session_answers_garbage_with_errors_and_refuses_input_in_view_mode() -> None:
    """Garbage, binary and input-in-view-mode get error replies; nothing reaches the injector."""
    tunnel, injector = MemoryTunnel(), RecordingInjector()
    stop = asyncio.Event()
    task = asyncio.create_task(run_screen_session(
        tunnel, mode="view", grabber=FakeGrabber(frame()), injector=injector, stop=stop))  # type: ignore[arg-type]
    monitors = await tunnel.next_text(stream.Monitors)
    assert isinstance(monitors, stream.Monitors) and monitors.selected == 1
    for bad in ("not json", b"\x00binary", '{"type": "cursor", "x": 1, "y": 1}'):
        await tunnel.to_agent.put(bad)
        error = await tunnel.next_text(stream.Error)
        assert isinstance(error, stream.Error) and error.code == "stream_invalid"
    await tunnel.to_agent.put(stream.encode_text(stream.InputKey(code="KeyA", action="down")))
    error = await tunnel.next_text(stream.Error)
    assert isinstance(error, stream.Error) and error.code == "view_only"
    stop.set()
    stats = await asyncio.wait_for(task, 5)
    assert (stats.invalid_messages, stats.refused_inputs, stats.end_reason) == (3, 1, "stopped")
    assert injector.events == []


async def test_session_injects_in_control_mode_and_releases_at_end() -> None:
    """Control mode passes input to the injector in order and releases held keys when the tunnel closes."""
    tunnel, injector = MemoryTunnel(), RecordingInjector()
    task = asyncio.create_task(run_screen_session(
        tunnel, mode="control", grabber=FakeGrabber(frame()), injector=injector))  # type: ignore[arg-type]
    await tunnel.next_text(stream.Monitors)
    key = stream.InputKey(code="KeyA", action="down")
    text = stream.InputText(text="hi")
    await tunnel.to_agent.put(stream.encode_text(key))
    await tunnel.to_agent.put(stream.encode_text(text))
    await tunnel.to_agent.put(None)
    stats = await asyncio.wait_for(task, 5)
    assert injector.events == [key, text, "released"]
    assert stats.injected_inputs == 2 and stats.end_reason.startswith("receiver failed")


async def test_monitor_switch_changes_reported_geometry() -> None:
    """Selecting another monitor announces its geometry and sends a full frame of it."""
    tunnel = MemoryTunnel()
    grabber = FakeGrabber(frame(64, 128, 10), frame(100, 50, 20))
    task = asyncio.create_task(run_screen_session(tunnel, mode="view", grabber=grabber))  # type: ignore[arg-type]
    first = await tunnel.next_text(stream.Monitors)
    assert isinstance(first, stream.Monitors) and (first.monitors[1].w, first.monitors[1].h) == (128, 64)
    await tunnel.to_agent.put(stream.encode_text(stream.MonitorSelect(index=2)))
    second = await tunnel.next_text(stream.Monitors)
    assert isinstance(second, stream.Monitors) and second.selected == 2
    async with asyncio.timeout(5):
        while True:
            data = await tunnel.from_agent.get()
            if isinstance(data, bytes) and (update := stream.unpack_update(data)).monitor == 2:
                break
    assert (update.w, update.h) == (50, 100)
    await tunnel.to_agent.put(None)
    await asyncio.wait_for(task, 5)
    assert grabber.closed is False  # a grabber passed in belongs to the caller


async def test_view_only_replies_are_rate_limited_but_every_refusal_counts() -> None:
    """A flood of input in view mode gets a burst of view_only errors, not one per message; all are counted."""
    tunnel, injector = MemoryTunnel(), RecordingInjector()
    stop = asyncio.Event()
    task = asyncio.create_task(run_screen_session(
        tunnel, mode="view", grabber=FakeGrabber(frame()), injector=injector, stop=stop))  # type: ignore[arg-type]
    await tunnel.next_text(stream.Monitors)
    started = asyncio.get_running_loop().time()
    for _ in range(50):
        await tunnel.to_agent.put(stream.encode_text(stream.InputMouse(action="move", x=1, y=1)))
    await tunnel.to_agent.put('{"type": "bogus"}')  # a marker: its error arrives after all 50 were handled
    errors = 0
    while True:
        message = await tunnel.next_text(stream.Error)
        assert isinstance(message, stream.Error)
        if message.code == "stream_invalid":
            break
        errors += 1
    elapsed = asyncio.get_running_loop().time() - started
    stop.set()
    stats = await asyncio.wait_for(task, 5)
    assert stats.refused_inputs == 50 and injector.events == []
    # A burst of 5 plus at most one more per second that passed.
    assert 5 <= errors <= 5 + int(elapsed) + 1, (errors, elapsed)


# --- damage-driven steps (issue 13) ------------------------------------------------------


class FakeRegionGrabber(FakeGrabber):
    """A grabber that also reads parts of the frame, counting the pixels it read."""

    def __init__(self, *frames: np.ndarray) -> None:
        super().__init__(*frames)
        self.region_px = 0
        self.full_grabs = 0

    def grab(self, index: int) -> np.ndarray:
        self.full_grabs += 1
        return super().grab(index)

    def grab_region(self, index: int, rect: Rect) -> np.ndarray:
        self.region_px += rect.area
        return self.frames[max(index - 1, 0)][rect.y : rect.y + rect.h, rect.x : rect.x + rect.w].copy()


def test_damage_step_reads_only_damaged_tiles_and_sends_the_changed_pixels_lossless() -> None:
    """A 6x9 change under a damage report: one tile grabbed, one FILL of exactly 6x9 sent, nothing lossy left."""
    screen = np.full((256, 512, 4), 200, dtype=np.uint8)
    grabber = FakeRegionGrabber(screen)
    pipe = ScreenPipeline(grabber, 1, settle_s=0.3)
    assert pipe.step(0.0, 60, 1).update is not None and grabber.full_grabs == 1
    assert pipe.step(1.0, 60, 2, []).update is None  # the one-colour first frame went as FILL: no refresh, no grab
    assert pipe.refresh_due_at() is None
    screen[70:79, 130:136] = 10
    result = pipe.step(1.1, 60, 3, [Rect(128, 66, 10, 14)])
    assert grabber.full_grabs == 1 and grabber.region_px == 64 * 64
    assert result.update is not None and not result.update.lossy
    rects = [stream.unpack_update(m) for m in result.update.messages]
    assert [(r.kind, r.encoding, r.x, r.y, r.w, r.h) for r in rects] == [(Kind.UPDATE, Encoding.FILL, 130, 70, 6, 9)]
    assert np.array_equal(decode(Encoding.FILL, rects[0].payload, 6, 9), screen[70:79, 130:136, :3])
    assert pipe.refresh_due_at() is None  # sent once, lossless: no refresh will follow
    assert pipe.step(2.0, 60, 4, []).update is None


def test_damage_step_ignores_drawing_that_changed_nothing_and_other_monitors() -> None:
    """Damage over unchanged pixels, or outside the monitor, sends nothing."""
    screen = np.full((128, 128, 4), 50, dtype=np.uint8)
    grabber = FakeRegionGrabber(screen)
    pipe = ScreenPipeline(grabber, 1)
    pipe.step(0.0, 60, 1)
    pipe.step(1.0, 60, 2, [])
    assert pipe.step(2.0, 60, 3, [Rect(0, 0, 20, 20), Rect(500, 500, 10, 10)]).update is None
    assert grabber.region_px == 64 * 64


def test_lossless_part_of_a_lossy_tile_leaves_the_tile_to_the_refresh() -> None:
    """A tight PNG inside a tile still lossy from a JPEG does not mark the whole tile exact."""
    rng = np.random.default_rng(1)
    screen = rng.integers(0, 256, (128, 128, 4), dtype=np.uint8)
    grabber = FakeRegionGrabber(screen)
    pipe = ScreenPipeline(grabber, 1, settle_s=0.3)
    assert pipe.step(0.0, 60, 1).update is not None  # noise: JPEG, lossy everywhere
    screen[10:12, 10:12] = 0
    screen[10, 10] = 1
    small = pipe.step(0.1, 60, 2, [Rect(10, 10, 2, 2)]).update
    assert small is not None and [stream.unpack_update(m).encoding for m in small.messages] == [Encoding.PNG]
    refresh = pipe.step(0.5, 60, 3, []).update
    assert refresh is not None and refresh.refresh
    refreshed = {(u.x, u.y) for u in map(stream.unpack_update, refresh.messages)}
    assert (0, 0) in refreshed


def test_damage_accumulator_is_bounded_and_reports_first_damage_once() -> None:
    """Only the first report after a take asks for a wake-up; past the bound everything is 'full'."""
    from agent.screen.damage import DamageAccumulator

    acc = DamageAccumulator(max_rects=3)
    assert acc.add(Rect(0, 0, 1, 1)) is True
    assert acc.add(Rect(1, 1, 1, 1)) is False
    taken = acc.take()
    assert taken.rects == [Rect(0, 0, 1, 1), Rect(1, 1, 1, 1)] and taken.reports == 2 and not taken.full
    for i in range(5):
        acc.add(Rect(i, i, 1, 1))
    flood = acc.take()
    assert flood.full and flood.rects == [] and flood.reports == 5
    assert not acc.take()


def test_uniform_rectangles_go_as_fill_and_are_checked() -> None:
    """One-colour changes (a toggled box) are 3 bytes of FILL that decode exactly; a bad FILL is refused."""
    screen = np.full((128, 256, 4), 90, dtype=np.uint8)
    pipe = ScreenPipeline(FakeRegionGrabber(screen), 1)
    pipe.step(0.0, 60, 1)
    screen[10:74, 20:84, :3] = (0, 128, 255)
    update = pipe.step(0.1, 60, 2, [Rect(20, 10, 64, 64)]).update
    assert update is not None and not update.lossy and update.nbytes == stream.HEADER_SIZE + 3
    rect = stream.unpack_update(update.messages[0])
    assert (rect.encoding, rect.x, rect.y, rect.w, rect.h, rect.payload) == (Encoding.FILL, 20, 10, 64, 64, bytes((0, 128, 255)))
    assert np.array_equal(decode(Encoding.FILL, rect.payload, 64, 64), screen[10:74, 20:84, :3])
    screen[40, 50, 0] = 1  # one pixel off: not uniform any more
    update = pipe.step(0.2, 60, 3, [Rect(50, 40, 1, 1)]).update
    assert update is not None and stream.unpack_update(update.messages[0]).encoding is Encoding.FILL  # 1x1
    screen[40, 51, 0] = 2
    screen[41, 50, 0] = 3
    update = pipe.step(0.3, 60, 4, [Rect(50, 40, 2, 2)]).update
    assert update is not None and stream.unpack_update(update.messages[0]).encoding is Encoding.PNG
    with pytest.raises(stream.StreamProtocolError):
        stream.pack_update(kind=Kind.UPDATE, monitor=1, x=0, y=0, w=4, h=4, encoding=Encoding.FILL, seq=1, payload=b"ab")


def test_compare_cuts_rectangles_to_the_changed_pixels_on_any_width() -> None:
    """tiles.compare gives dirty_tiles' mask, and Diff.bounds the same box as changed_bounds (64- and 32-bit paths)."""
    rng = np.random.default_rng(11)
    for width in (256, 199):  # even: two pixels per word; odd: one
        sent = rng.integers(0, 256, (150, width, 4), dtype=np.uint8)
        current = sent.copy()
        current[70, 131, 1] ^= 1
        current[100, 140, 3] ^= 1  # the X padding byte counts too
        mask, diff = compare(sent, current)
        assert np.array_equal(mask, dirty_tiles(sent, current)) and mask.sum() == 1
        rect = Rect(128, 64, 64, 64)
        exact = changed_bounds(sent[64:128, 128:192], current[64:128, 128:192])
        assert exact == Rect(3, 6, 10, 31)
        # Columns come in whole words: two pixels on even widths, so the box may be a pixel wider each side.
        assert diff.bounds(rect) == (Rect(130, 70, 12, 31) if width % 2 == 0 else Rect(131, 70, 10, 31))
        assert diff.bounds(Rect(0, 0, 64, 64)) is None
