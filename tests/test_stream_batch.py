"""Batched screen updates: an update's records in one websocket message (protocol/stream.py, "Batched updates").

The format (grouping, parsing, what is refused), the relay's header-only reading of a batch (acks, idle activity),
the pipeline's batches against its unbatched records, who gets the offer and who passes it on, and a real session
through the relay whose viewer receives batches. (The console's reading and drawing of a batch is checked in
Chromium: tests/test_console_session.py.)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import numpy as np
import pytest
from aiohttp import WSMsgType

from agent.desktop.broker import DesktopBroker
from agent.screen.pipeline import ScreenPipeline
from agent.viewer import Viewer
from common.version import __version__
from protocol import jpeg_tables, stream
from protocol.desktop import ScreenEnded, ScreenStart
from protocol.session import SessionOffer
from protocol.stream import (
    BATCH_CAPABILITY,
    MAX_BATCH_BYTES,
    Encoding,
    Flags,
    Kind,
    RecordScan,
    StreamProtocolError,
    batch_records,
    pack_cursor_shape,
    pack_update,
    scan_records,
    split_records,
    unpack_records,
    unpack_update,
)
from server.sessions import relay as relay_module
from server.sessions.relay import Relay
from server.sessions.settings import SessionSettings
from server.store import Database
from tests.conftest import add_device
from tests.harness import wait_until
from tests.test_jpeg_lean import _Frames, _picture
from tests.test_relay import started_session
from tests.test_screen_session import holds_screen, monitor_bgr
from tests.test_session_driver import ANN, _setup
from tests.test_session_helpers import paint_picture, viewer_for
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


def _record(seq: int, x: int = 0, *, kind: Kind = Kind.UPDATE, last: bool = False, w: int = 64, h: int = 64,
            payload: bytes = b"\x10\x20\x30") -> bytes:
    return pack_update(kind=kind, monitor=0, x=x, y=0, w=w, h=h, encoding=Encoding.FILL, seq=seq, payload=payload,
                       flags=Flags.END_OF_FRAME if last else Flags.NONE)


def _update(seq: int, count: int) -> list[bytes]:
    return [_record(seq, 64 * i, last=i == count - 1) for i in range(count)]


# --- the format -------------------------------------------------------------------------------------------------

def test_records_group_in_order_within_the_cap_and_a_large_record_goes_alone() -> None:
    records = _update(7, 10)  # 24 bytes each
    assert batch_records(records) == [b"".join(records)]
    assert batch_records(records, max_bytes=100) == [b"".join(records[i:i + 4]) for i in (0, 4)] + [
        b"".join(records[8:])]
    big = pack_update(kind=Kind.UPDATE, monitor=0, x=0, y=0, w=64, h=64, encoding=Encoding.RAW, seq=7,
                      payload=bytes(64 * 64 * 4))
    grouped = batch_records([records[0], big, records[1]], max_bytes=1000)
    assert grouped == [records[0], big, records[1]]  # the big one alone, its neighbours not joined across it
    assert batch_records(records, max_records=3) == [b"".join(records[i:i + 3]) for i in (0, 3, 6)] + [records[9]]
    many = [_record(7, 0) for _ in range(stream.MAX_BATCH_RECORDS + 5)]  # an 8K screen's tiles, say
    assert [len(unpack_records(m)) for m in batch_records(many)] == [stream.MAX_BATCH_RECORDS, 5]
    assert batch_records([]) == []
    assert batch_records(records[:1]) == [records[0]]  # one record: the unbatched message itself


def test_a_batch_reads_as_its_records_and_one_record_as_before() -> None:
    records = _update(9, 5)
    parsed = unpack_records(b"".join(records))
    assert parsed == [unpack_update(r) for r in records]
    assert [u.end_of_frame for u in parsed] == [False] * 4 + [True]
    shape = pack_cursor_shape(w=2, h=2, hot_x=0, hot_y=0, rgba=bytes(16), seq=3)
    assert unpack_records(shape) == [unpack_update(shape)]
    assert unpack_records(bytearray(records[0])) == [unpack_update(records[0])]


@pytest.mark.parametrize("message, complaint", [
    (b"".join([_record(1), _record(2, last=True)]), "records of updates 1 and 2"),
    (b"".join([_record(1, last=True), _record(1, 64)]), "follows the one flagged END_OF_FRAME"),
    (_record(1) + pack_cursor_shape(w=2, h=2, hot_x=0, hot_y=0, rgba=bytes(16), seq=1), "travels alone"),
    (pack_cursor_shape(w=2, h=2, hot_x=0, hot_y=0, rgba=bytes(16), seq=1) + _record(1), "travels alone"),
    (b"".join(_update(1, 2)) + b"\xa1\x01", "are not a record"),
    (b"".join(_update(1, 2))[:-1], "claims"),
    (_record(1) + b"\x00" * 21, "magic"),
    (_record(1) + stream.HEADER.pack(0xA1, 1, 1, 0, 0, 0, 0, 64, 5, 1, 3) + b"\x10\x20\x30", "outside"),
])
def test_a_batch_that_breaks_the_rules_is_refused_with_a_clear_error(message: bytes, complaint: str) -> None:
    with pytest.raises(StreamProtocolError, match=complaint):
        unpack_records(message)
    assert scan_records(message).end_of_frame == -1 or complaint == "outside"  # never an ack the viewer won't send


def test_batches_above_the_size_and_count_caps_are_refused() -> None:
    fat = pack_update(kind=Kind.UPDATE, monitor=0, x=0, y=0, w=512, h=512, encoding=Encoding.RAW, seq=1,
                      payload=bytes(512 * 512 * 4))
    assert len(fat) + 24 > MAX_BATCH_BYTES
    with pytest.raises(StreamProtocolError, match="exceeds"):
        unpack_records(fat + _record(1, last=True))
    assert unpack_records(fat) == [unpack_update(fat)]  # alone it is fine
    many = [_record(1, 0) for _ in range(stream.MAX_BATCH_RECORDS)] + [_record(1, 0, last=True)]
    with pytest.raises(StreamProtocolError, match="more than"):
        unpack_records(b"".join(many))


def test_the_relay_scan_reads_changes_and_the_end_from_headers_only() -> None:
    update = [_record(4, 0, w=64, h=32), _record(4, 64, kind=Kind.REFRESH, w=128, h=64), _record(4, 192, last=True)]
    assert scan_records(b"".join(update)) == RecordScan(changed_px=64 * 32 + 64 * 64, end_of_frame=4, seq=4,
                                                        records=3)
    assert scan_records(b"".join(update[:2])) == RecordScan(changed_px=64 * 32, end_of_frame=-1, seq=4, records=2)
    assert scan_records(update[2]) == RecordScan(changed_px=64 * 64, end_of_frame=4, seq=4, records=1)
    shape = pack_cursor_shape(w=2, h=2, hot_x=0, hot_y=0, rgba=bytes(16), seq=9)
    assert scan_records(shape) == RecordScan(0, -1, -1, 0)
    for broken in (b"", b"\xa1", b"".join(update)[:-1], b"".join(update) + b"\xa1",
                   b"".join([_record(1), _record(2, last=True)])):
        assert scan_records(broken) == RecordScan(0, -1, -1, 0), broken


def test_a_batch_splits_into_its_records_and_anything_else_stays_whole() -> None:
    update = _update(6, 5)
    assert split_records(b"".join(update)) == update
    assert split_records(update[0]) == [update[0]]
    for broken in (b"".join(update)[:-1], b"".join(update) + b"\xa1", b"\xa1"):
        assert split_records(broken) == [broken]


def test_mangled_batches_are_refused_or_read_never_anything_else() -> None:
    """Random byte flips, cuts and splices: StreamProtocolError or well-formed records, and the scan never raises
    and never names an end of frame that the parse would not."""
    rng = random.Random(13)
    base = b"".join(_update(5, 6))
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(3)
            if op == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1 and data:
                del data[rng.randrange(len(data)):]
            else:
                at = rng.randrange(len(data) + 1)
                data[at:at] = base[: rng.randint(1, 40)]
        message = bytes(data)
        scan = scan_records(message)
        try:
            records = unpack_records(message)
        except StreamProtocolError:
            continue
        assert records and all(isinstance(u.payload, bytes) for u in records)
        if records[0].kind is not Kind.CURSOR_SHAPE:
            assert scan.end_of_frame == (records[-1].seq if records[-1].end_of_frame else -1)


# --- the pipeline -----------------------------------------------------------------------------------------------

def test_the_pipeline_batches_only_when_told_and_sends_the_same_records() -> None:
    frame = _picture(3, 512, 1024)
    frame[:, :512] = (40, 90, 200, 0)  # flat half: FILL records beside the JPEG bands
    updates = {batched: ScreenPipeline(_Frames(frame), 1, batched=batched).step(0.0, 75, 1).update
               for batched in (False, True)}
    plain, batched = updates[False], updates[True]
    assert plain is not None and batched is not None
    assert len(plain.messages) == plain.rects >= 2
    assert len(batched.messages) == 1 and batched.rects == plain.rects
    assert batched.messages[0] == b"".join(plain.messages)
    assert batched.nbytes == plain.nbytes == len(batched.messages[0])


async def test_the_python_viewer_draws_a_batch_skips_a_record_that_does_not_decode_and_acks_the_update() -> None:
    viewer = Viewer("wss://relay.invalid/api/v1/sessions/s/stream?ticket=t", auto_ack=False)
    assert viewer.url.endswith("?ticket=t&batched=1")  # it says it reads batches
    viewer.selected, viewer.framebuffer = 0, np.zeros((64, 192, 3), dtype=np.uint8)
    broken = pack_update(kind=Kind.UPDATE, monitor=0, x=64, y=0, w=64, h=64, encoding=Encoding.JPEG, seq=8,
                         payload=b"\xff\xd8 not a jpeg")
    batch = b"".join([_record(8, 0, payload=b"\x01\x02\x03"), broken, _record(8, 128, last=True)])
    await viewer._on_binary(batch, 0.0)
    assert viewer.stats.bad_messages == 1 and viewer.stats.rects == 3 and viewer.stats.updates == 1
    assert viewer.pending_acks == [8]  # the window does not stall on one bad rectangle
    assert viewer.framebuffer[0, 0].tolist() == [1, 2, 3] and viewer.framebuffer[0, 130].tolist() == [16, 32, 48]


# --- who gets it ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, capability", [("jpeg_lean", jpeg_tables.CAPABILITY), ("batched", BATCH_CAPABILITY)])
async def test_the_server_offers_what_viewers_read_only_to_agents_that_read_the_field(
        db: Database, field: str, capability: str) -> None:
    """``session.offer.jpeg_lean`` / ``.batched``: only for agents whose hello names the capability; the others get
    an offer without the field (they refuse unknown fields)."""
    for capabilities, expected in ((["session"], msgspec.UNSET), (["session", capability], True)):
        device = await add_device(db, f"dev-{field}-{len(capabilities)}")
        s = _setup(db, device)
        s.agent.hello = SimpleNamespace(capabilities=capabilities)
        await s.driver.request(device_id=device, group="lab", technician=ANN, mode="view", reason="t")
        (offer,) = [m for m in s.agent.sent if isinstance(m, SessionOffer)]
        assert getattr(offer, field) is expected
        assert (f'"{field}"'.encode() in msgspec.json.encode(offer)) is (expected is True)
        await s.driver.close()
    assert SessionOffer.__struct_config__.forbid_unknown_fields


class _HelperLink:
    """The service's end of a helper connection, as relay_screen uses it; the helper ends the stream at once."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.streams: dict[str, Any] = {}
        self.closed = asyncio.Event()
        self.started: list[ScreenStart] = []

    async def send(self, message: Any) -> None:
        if isinstance(message, ScreenStart):
            self.started.append(message)
            stream = self.streams[message.stream_id]
            stream.ended.set_result(ScreenEnded(stream_id=message.stream_id, reason="done"))
            stream.frames.put_nowait(None)


class _Tunnel:
    async def send(self, data: str | bytes) -> None:
        pass

    async def recv(self) -> str:
        await asyncio.Event().wait()
        return ""



#: (the run_screen keyword, the screen.start field, [(helper version, asked, passed on)]).
_HELPER_GATES = [
    ("lean_jpeg", "jpeg_lean", [("", True, False), ("1.0.0", False, False), ("1.0.0", True, True)]),
    ("batched", "batched", [("", True, False), ("0.0.1-older", True, False), (__version__, False, False),
                            (__version__, True, True)]),
]


@pytest.mark.parametrize("keyword, field, cases", _HELPER_GATES, ids=["jpeg_lean", "batched"])
async def test_the_service_passes_viewer_features_on_only_to_helpers_that_read_them(
        keyword: str, field: str, cases: list[tuple[str, bool, bool]]) -> None:
    """Lean JPEGs go to helpers that name a version at all, batches only to helpers of the service's own version
    (both fields are left out of ``screen.start`` otherwise: older helpers refuse unknown fields)."""
    broker = DesktopBroker(tracker=None, socket_path=Path("/nonexistent"))  # type: ignore[arg-type]
    for version, asked, passed in cases:
        link = _HelperLink(version)
        broker._bound["s-1"] = link  # type: ignore[assignment]
        stats = await broker.run_screen("s-1", _Tunnel(), mode="view", display=None, stop=asyncio.Event(),
                                        input_gate=None, **{keyword: asked})
        assert stats.end_reason == "done"
        (start,) = link.started
        assert getattr(start, field) is (True if passed else msgspec.UNSET), (version, asked)
        assert (f'"{field}"'.encode() in msgspec.json.encode(start)) is passed


# --- the relay --------------------------------------------------------------------------------------------------

class _Socket:
    """One side's websocket as the relay uses it: messages in from a queue, messages out to a list."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[Any] = asyncio.Queue()
        self.sent: list[str | bytes] = []
        self.got = asyncio.Event()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Any]:
        while True:
            item = await self.incoming.get()
            if item is None:
                return
            yield SimpleNamespace(type=WSMsgType.BINARY if isinstance(item, bytes) else WSMsgType.TEXT, data=item)

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)
        self.got.set()

    async def send_str(self, data: str) -> None:
        self.sent.append(data)
        self.got.set()

    async def close(self, **_: Any) -> None:
        self.incoming.put_nowait(None)


async def test_the_relay_passes_a_batch_on_whole_or_split_acks_it_once_and_counts_its_changes() -> None:
    """Ann's console reads batches and gets the message as it came; Bob's (older) gets one record a message."""
    now = [1000.0]
    ended: list[str] = []

    async def on_end(reason: str, by: str) -> None:
        ended.append(reason)

    settings = SessionSettings(idle_min_change_px=64 * 64 * 3)
    relay = Relay("s-batch", settings, view_only=lambda: False, on_input_refused=lambda _: None, on_end=on_end,
                  clock=lambda: now[0])
    agent, ann, bob = _Socket(), _Socket(), _Socket()
    serving = [asyncio.ensure_future(relay.serve("agent", agent)),  # type: ignore[arg-type]
               asyncio.ensure_future(relay.serve("technician", ann, "ann", reads_batches=True)),  # type: ignore[arg-type]
               asyncio.ensure_future(relay.serve("technician", bob, "bob"))]  # type: ignore[arg-type]
    try:
        agent.incoming.put_nowait(stream.encode_text(stream.Monitors(
            monitors=[stream.MonitorInfo(x=0, y=0, w=1024, h=768, primary=True)], selected=0)))
        await wait_until(lambda: relay.selected_monitor == 0, timeout=5, what="the monitors message")
        start = relay.last_activity
        now[0] += 5
        records = _update(11, 4)  # 4 changed tiles: more than the 3 that count as activity
        batch = b"".join(records)
        agent.incoming.put_nowait(batch)
        await wait_until(lambda: batch in ann.sent, timeout=5, what="the batch, whole, at Ann's")
        await wait_until(lambda: records[-1] in bob.sent, timeout=5, what="the batch's last record at Bob's")
        assert [m for m in bob.sent if isinstance(m, bytes)] == records  # one record a message, in order
        assert relay.last_activity == now[0] != start
        assert [sorted(h) for h in relay._holding.values()] == [["ann", "bob"]]  # held until one draws it
        ann.incoming.put_nowait(stream.encode_text(stream.Ack(seq=11)))
        bob.incoming.put_nowait(stream.encode_text(stream.Ack(seq=11)))
        acks = [stream.encode_text(stream.Ack(seq=11))]
        await wait_until(lambda: [m for m in agent.sent if "ack" in str(m)] == acks, timeout=5,
                         what="one ack for the batch at the agent")
        now[0] += 5
        agent.incoming.put_nowait(b"".join(_update(12, 2)))  # 2 tiles: not activity
        await wait_until(lambda: len(ann.sent) >= 3 and len(bob.sent) >= 7, timeout=5, what="the second batch")
        assert relay.last_activity == now[0] - 5
    finally:
        await relay.close("test over")
        for task in serving:
            task.cancel()
        await asyncio.gather(*serving, return_exceptions=True)
    assert not ended


class _StuckSocket(_Socket):
    """A viewer whose link is stuck: the first frame it is given never leaves."""

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)
        self.got.set()
        await asyncio.Event().wait()


async def test_a_viewer_that_lags_falls_behind_after_as_many_records_batched_or_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay's queue bound counts records, not messages: batching must not let a lagging viewer queue thirty
    times more before it is dropped to the next complete screen."""
    monkeypatch.setattr(relay_module, "VIEWER_MAX_ITEMS", 8)

    async def on_end(reason: str, by: str) -> None:
        pass

    relay = Relay("s-lag", SessionSettings(), view_only=lambda: False, on_input_refused=lambda _: None,
                  on_end=on_end)
    agent, stuck = _Socket(), _StuckSocket()
    serving = [asyncio.ensure_future(relay.serve("agent", agent)),  # type: ignore[arg-type]
               asyncio.ensure_future(relay.serve("technician", stuck, "ann", reads_batches=True))]  # type: ignore[arg-type]
    try:
        agent.incoming.put_nowait(stream.encode_text(stream.Monitors(
            monitors=[stream.MonitorInfo(x=0, y=0, w=1024, h=768, primary=True)], selected=0)))
        await wait_until(lambda: relay.selected_monitor == 0, timeout=5, what="the monitors message")
        agent.incoming.put_nowait(b"".join(_update(1, 4)))
        await wait_until(lambda: len(stuck.sent) == 2, timeout=5, what="the first batch in the stuck send")
        state = relay.viewers["ann"]
        for seq in (2, 3):  # 8 records queued in 2 messages
            agent.incoming.put_nowait(b"".join(_update(seq, 4)))
        await wait_until(lambda: len(state.items) == 2, timeout=5, what="two batches queued")
        assert state.resyncs == 0 and len(state.items) + state.extra_records == 8
        agent.incoming.put_nowait(b"".join(_update(4, 4)))
        await wait_until(lambda: state.resyncs == 1, timeout=5, what="the lagging viewer dropped to a resync")
        assert not state.items and state.extra_records == 0
    finally:
        await relay.close("test over")
        for task in serving:
            task.cancel()
        await asyncio.gather(*serving, return_exceptions=True)


# --- a real session ---------------------------------------------------------------------------------------------

async def test_a_session_through_the_relay_arrives_in_batches_and_stays_exact(
        tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """The agent says it batches, the server offers it, the viewer gets several rectangles in one message and its
    image still equals the screen."""
    async with started_session(tmp_path, xvfb.display) as s:
        viewer = viewer_for(s.server, s.sid)
        records_per_message: list[int] = []
        read = viewer._on_binary

        async def counting(data: bytes, now: float) -> None:
            if data[:1] == bytes([stream.MAGIC_VERSION]):
                records_per_message.append(len(unpack_records(data)))
            await read(data, now)

        viewer._on_binary = counting  # type: ignore[method-assign]
        async with viewer:
            await viewer.wait_for_updates(1, timeout=20)
            whole = (0, 0, xvfb.width, xvfb.height)
            await holds_screen(viewer, xvfb.display, whole, timeout=20)
            for colour in ((200, 40, 40), (40, 160, 40)):
                # One drawing request that changes two places far apart: one update of (at least) two rectangles.
                strip = np.zeros((30, xvfb.width, 4), dtype=np.uint8)
                strip[:, :, :3] = monitor_bgr(xvfb.display, 0, 100, xvfb.width, 30)
                strip[:, 10:50, :3] = strip[:, -50:-10, :3] = colour[::-1]
                records_per_message.clear()
                paint_picture(xvfb.display, 0, 100, strip)
                await holds_screen(viewer, xvfb.display, whole, timeout=20)
                assert max(records_per_message) >= 2, records_per_message  # both rectangles in one message
        assert viewer.stats.bad_messages == 0
