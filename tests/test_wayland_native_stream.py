"""The native PipeWire reader's records without a compositor: parsing, validation, pasting, cursor.

A stand-in for helpline-pwcast (a small Python script given as ``binary``) writes crafted records to the
pipe the reader gives it, so the reader's real thread, child handling and checks run: good records become
frames, damage rectangles and cursor reports; malformed ones end the stream with the reason logged.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.screen.tiles import Rect
from agent.screen.wayland.backend import wayland_cursor_metadata
from agent.screen.wayland.frames import PipeWireError
from agent.screen.wayland.native import NativeCapture, native_reader
from agent.screen.wayland.native_stream import (
    FLAG_COMPUTED,
    FLAG_CURSOR,
    FLAG_DAMAGE,
    FLAG_FULL,
    FLAG_HIDDEN,
    FLAG_RECTS,
    FLAG_SHAPE,
    HEADER,
    MAGIC,
    RECT,
    NativeStreamError,
    parse_header,
    parse_rects,
)
from agent.screen.wayland.stream_cursor import StreamCursor, straight_alpha

W, H = 64, 48


def header(flags: int = FLAG_FULL, *, w: int = W, h: int = H, n_rects: int = 0, cursor: tuple[int, int] = (0, 0),
           hot: tuple[int, int] = (0, 0), shape: tuple[int, int] = (0, 0), magic: int = MAGIC, version: int = 1,
           seq: int = 0) -> bytes:
    return HEADER.pack(magic, version, flags, seq, w, h, n_rects, *cursor, *hot, *shape)


def rects(*items: tuple[int, int, int, int]) -> bytes:
    return b"".join(RECT.pack(*r) for r in items)


def frame(value: int) -> bytes:
    return bytes([value]) * (W * H * 4)


# --- the parser --------------------------------------------------------------------------------------


def test_a_good_header_and_its_rectangles_parse() -> None:
    """A damage record's header and rectangles parse, with the sizes of what follows."""
    record = parse_header(header(FLAG_RECTS | FLAG_DAMAGE | FLAG_COMPUTED, n_rects=2), W, H)
    got = parse_rects(rects((0, 0, 8, 4), (60, 40, 4, 8)), record)
    assert got == [Rect(0, 0, 8, 4), Rect(60, 40, 4, 8)]
    assert record.rects_size == 32 and record.pixels_size(got) == (32 + 32) * 4


@pytest.mark.parametrize(("data", "message"), [
    (header()[:-1], "a record header is 64 bytes"),
    (header(magic=0x12345678), "bad magic"),
    (header(version=2), "record version 2"),
    (header(FLAG_FULL | 1024), "unknown flags"),
    (header(w=W + 1), "frame in a"),
    (header(FLAG_FULL | FLAG_RECTS | FLAG_DAMAGE, n_rects=1), "both the whole frame and rectangles"),
    (header(FLAG_RECTS | FLAG_DAMAGE, n_rects=65), "65 damage rectangles"),
    (header(FLAG_FULL, n_rects=1), "rectangles without the damage flag"),
    (header(FLAG_RECTS | FLAG_DAMAGE), "rectangle pixels without rectangles"),
    (header(FLAG_CURSOR | FLAG_HIDDEN), "both on and off"),
    (header(FLAG_CURSOR, cursor=(1 << 21, 0)), "cursor numbers out of range"),
    (header(FLAG_SHAPE, shape=(600, 10)), "cursor image 600x10"),
    (header(FLAG_SHAPE, shape=(0, 10)), "cursor image 0x10"),
    (header(shape=(4, 4)), "without the shape flag"),
])
def test_a_malformed_header_is_a_clear_error(data: bytes, message: str) -> None:
    """Every malformed header is refused with a message that says what is wrong (never another exception)."""
    with pytest.raises(NativeStreamError, match=message):
        parse_header(data, W, H)


@pytest.mark.parametrize(("items", "message"), [
    (((0, 0, 0, 4),), "outside the"),
    (((60, 0, 8, 4),), "outside the"),
    (((0, 40, 4, 9),), "outside the"),
    (((0xFFFFFFFF, 0, 2, 2),), "outside the"),
])
def test_a_rectangle_outside_the_frame_is_refused(items: tuple[tuple[int, int, int, int], ...], message: str) -> None:
    """Empty rectangles and rectangles reaching past the frame (or wrapping around) are refused."""
    record = parse_header(header(FLAG_RECTS | FLAG_DAMAGE, n_rects=len(items)), W, H)
    with pytest.raises(NativeStreamError, match=message):
        parse_rects(rects(*items), record)


def test_overlapping_rectangles_bigger_than_the_frame_are_refused() -> None:
    """Rectangle pixels are bounded by one frame: a record cannot make the reader read more."""
    record = parse_header(header(FLAG_RECTS | FLAG_DAMAGE, n_rects=2), W, H)
    with pytest.raises(NativeStreamError, match="rectangles of"):
        parse_rects(rects((0, 0, W, H), (0, 0, W, H)), record)


# --- the reader on a crafted stream ---------------------------------------------------------------------


def fake_binary(tmp_path: Path, *chunks: bytes) -> str:
    """A stand-in for helpline-pwcast that writes ``chunks`` to its --out fd — chunk i > 0 only once the file
    ``go{i}`` exists in ``tmp_path`` — then waits to be killed."""
    for i, chunk in enumerate(chunks):
        (tmp_path / f"chunk{i}").write_bytes(chunk)
    script = tmp_path / "fake-pwcast"
    script.write_text(f"#!{sys.executable}\n"
                      "import os, sys, time\n"
                      "out = int(sys.argv[sys.argv.index('--out') + 1])\n"
                      f"for i in range({len(chunks)}):\n"
                      f"    while i and not os.path.exists(os.path.join({str(tmp_path)!r}, f'go{{i}}')):\n"
                      "        time.sleep(0.01)\n"
                      f"    view = memoryview(open(os.path.join({str(tmp_path)!r}, f'chunk{{i}}'), 'rb').read())\n"
                      "    while view:\n"
                      "        view = view[os.write(out, view):]\n"
                      "time.sleep(60)\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def wait(check: object, timeout: float = 10.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)  # polling interval, not synchronization


def test_rectangles_are_pasted_into_the_newest_frame_and_reported_as_damage(tmp_path: Path) -> None:
    """A whole frame then two rectangle records: the frame holds both changes, damage names the rectangles (in
    desktop coordinates), and a buffer filled later is brought up to date with the rectangles it missed."""
    first = frame(10)
    patch1 = bytes([200]) * (8 * 4 * 4)
    patch2 = bytes([77]) * (4 * 8 * 4)
    payload = (header(FLAG_FULL) + first
               + header(FLAG_RECTS | FLAG_DAMAGE | FLAG_COMPUTED, n_rects=1) + rects((0, 0, 8, 4)) + patch1
               + header(FLAG_RECTS | FLAG_DAMAGE | FLAG_COMPUTED, n_rects=1) + rects((60, 40, 4, 8)) + patch2
               + header(FLAG_RECTS | FLAG_DAMAGE | FLAG_COMPUTED, n_rects=1) + rects((10, 10, 2, 2))
               + bytes([5]) * 16)
    capture = NativeCapture(7, 100, 200, W, H, binary=fake_binary(tmp_path, payload))
    capture.start(lambda: None)
    try:
        wait(lambda: capture.frames == 4)
        got = capture.grab(1)
        expected = np.full((H, W, 4), 10, dtype=np.uint8)
        expected[0:4, 0:8] = 200
        expected[40:48, 60:64] = 77
        expected[10:12, 10:12] = 5
        assert np.array_equal(got, expected)
        assert np.array_equal(capture.grab_region(1, Rect(60, 40, 4, 8)), expected[40:48, 60:64])
        damage = capture.take()
        assert damage.full  # the first whole frame
        assert capture.damage_frames == 3
    finally:
        capture.close()


def test_damage_after_the_first_frame_is_rectangles_not_full(tmp_path: Path) -> None:
    """Once the first frame is taken, a rectangle record is reported as that rectangle, offset to the desktop."""
    binary = fake_binary(tmp_path, header(FLAG_FULL) + frame(1),
                         header(FLAG_RECTS | FLAG_DAMAGE | FLAG_COMPUTED, n_rects=1) + rects((4, 8, 2, 2))
                         + bytes([9]) * 16)
    capture = NativeCapture(7, 100, 200, W, H, binary=binary)
    capture.start(lambda: None)
    try:
        wait(lambda: capture.frames == 1)
        assert capture.take().full
        (tmp_path / "go1").touch()
        wait(lambda: capture.frames == 2)
        damage = capture.take()
        assert not damage.full and damage.rects == [Rect(104, 208, 2, 2)]
        assert capture.grab(1)[8, 4, 0] == 9 and capture.grab(1)[8, 6, 0] == 1
    finally:
        capture.close()


def test_a_malformed_record_ends_the_stream_with_a_clear_logged_error(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A good frame, then a record with a rectangle outside the frame: the reader logs why and ends the stream;
    the last good frame stays, nothing crashes, and the child is killed on close."""
    payload = (header(FLAG_FULL) + frame(3)
               + header(FLAG_RECTS | FLAG_DAMAGE, n_rects=1) + rects((60, 40, 8, 8)) + bytes(8 * 8 * 4))
    capture = NativeCapture(9, 0, 0, W, H, binary=fake_binary(tmp_path, payload))
    with caplog.at_level(logging.ERROR, logger="agent.screen.wayland.native"):
        capture.start(lambda: None)
        try:
            wait(lambda: any("malformed" in r.getMessage() for r in caplog.records))
            message = next(r.getMessage() for r in caplog.records if "malformed" in r.getMessage())
            assert "damage rectangle 8x8 at 60,40 outside the 64x48 frame" in message
            assert "node 9 is ended" in message
            assert capture.grab(1)[0, 0, 0] == 3
        finally:
            capture.close()
    assert capture._proc is not None and capture._proc.returncode is not None


def test_garbage_before_any_frame_is_an_error_for_the_grab(tmp_path: Path) -> None:
    """Bytes that are no record at all: the first grab fails with the parser's reason, at once."""
    capture = NativeCapture(9, 0, 0, W, H, binary=fake_binary(tmp_path, b"GET / HTTP/1.1\r\n" * 8))
    capture.start(lambda: None)
    try:
        with pytest.raises(PipeWireError, match="bad magic"):
            capture.grab(1)
    finally:
        capture.close()


def test_cursor_records_feed_the_sessions_cursor_path(tmp_path: Path) -> None:
    """Cursor metadata becomes desktop positions and one image per change; off the stream, a point just outside it."""
    shape = bytes([255, 255, 255, 255]) * 4 + bytes([0, 0, 0, 128]) * 4  # 4x2: white row, half-transparent black row
    payload = (header(FLAG_FULL | FLAG_CURSOR | FLAG_SHAPE, cursor=(5, 6), hot=(1, 1), shape=(4, 2)) + shape
               + frame(0)
               + header(FLAG_CURSOR, cursor=(7, 8))
               + header(FLAG_HIDDEN))
    cursor = StreamCursor()
    moved: list[int] = []
    cursor.start(lambda: moved.append(1))
    capture = NativeCapture(5, 100, 200, W, H, binary=fake_binary(tmp_path, payload), cursor=cursor)
    capture.start(lambda: None)
    try:
        wait(lambda: cursor.positions == 3)
        image = cursor.changed_shape()
        assert image is not None and (image.w, image.h, image.hot_x, image.hot_y) == (4, 2, 1, 1)
        assert image.rgba == shape  # not premultiplied (255 white): passed on as it is
        assert cursor.changed_shape() is None  # once per change
        assert cursor.position() == (99, 199)  # the pointer left the stream: just outside it
        assert len(moved) == 3
    finally:
        capture.close()


def test_an_empty_cursor_image_is_one_transparent_pixel_and_premultiplied_images_are_made_straight() -> None:
    """Mutter's 0x0 image (no pointer drawn) becomes a 1x1 transparent shape; premultiplied RGBA is un-premultiplied."""
    cursor = StreamCursor()
    cursor.update(object(), (1, 2), (b"", 0, 0, 0, 0))
    image = cursor.changed_shape()
    assert image is not None and (image.w, image.h, image.rgba) == (1, 1, bytes(4))
    premultiplied = bytes([64, 32, 0, 128])
    assert straight_alpha(premultiplied, 1, 1) == bytes([128, 64, 0, 128])


def test_a_hidden_report_of_one_stream_does_not_hide_the_pointer_another_shows() -> None:
    """With several readers (a mosaic), 'not on my stream' from one leaves the pointer where another reported it."""
    cursor = StreamCursor()
    a, b = object(), object()
    cursor.update(a, (10, 10), None)
    cursor.update(b, (1279, 0), None, on_stream=False)
    assert cursor.position() == (10, 10)
    cursor.update(a, (-1, -1), None, on_stream=False)
    assert cursor.position() == (-1, -1)


def test_the_native_reader_is_chosen_only_when_it_runs(tmp_path: Path) -> None:
    """HELPLINE_PWCAST=off or a binary that is missing or answers wrongly: None with the reason (gst-launch then)."""
    assert native_reader({"HELPLINE_PWCAST": "off"}).binary is None
    missing = native_reader({"HELPLINE_PWCAST": str(tmp_path / "nope")})
    assert missing.binary is None and "cannot run" in missing.reason
    liar = tmp_path / "liar"
    liar.write_text("#!/bin/sh\necho something-else\n")
    liar.chmod(0o755)
    wrong = native_reader({"HELPLINE_PWCAST": str(liar)})
    assert wrong.binary is None and "something-else" in wrong.reason
    built = Path(sys.executable).parent / "helpline-pwcast"
    assert os.access(built, os.X_OK), "scripts/setup.sh builds helpline-pwcast into the virtualenv"
    chosen = native_reader({})
    assert chosen.binary == str(built) and chosen.pixels == "damage" and chosen.cursor_metadata


def test_the_cursor_mode_is_configurable(tmp_path: Path) -> None:
    """[screen] wayland_cursor in the agent's config file; HELPLINE_WAYLAND_CURSOR overrides; default and junk →
    embedded (the pointer drawn in: metadata mode can miss a first paint on Mutter 43.8)."""
    config = tmp_path / "agent.toml"
    config.write_text('[screen]\nwayland_cursor = "metadata"\n')
    assert wayland_cursor_metadata({"HELPLINE_AGENT_CONFIG": str(tmp_path / "missing.toml")}) is False
    assert wayland_cursor_metadata({"HELPLINE_AGENT_CONFIG": str(config)}) is True
    assert not wayland_cursor_metadata({"HELPLINE_AGENT_CONFIG": str(config), "HELPLINE_WAYLAND_CURSOR": "embedded"})
    config.write_text('[screen]\nwayland_cursor = "sprites"\n')
    assert wayland_cursor_metadata({"HELPLINE_AGENT_CONFIG": str(config)}) is False


def test_the_record_header_layout_matches_the_c_struct() -> None:
    """64 bytes, little endian, magic first: what helpline-pwcast.c's _Static_assert and MAGIC say."""
    assert HEADER.size == 64
    assert header()[:4] == b"HPWC"
    assert struct.unpack_from("<I", header(), 0)[0] == MAGIC


i32 = st.integers(-(1 << 31), (1 << 31) - 1)
u32 = st.one_of(st.integers(0, 600), st.integers(0, (1 << 32) - 1))


@settings(max_examples=400, deadline=None)
@given(flags=st.integers(0, 0xFFFF), size=st.sampled_from([(W, H), (W, H), (W + 1, H), (0, 0)]),
       n_rects=st.one_of(st.integers(0, 3), st.integers(0, 100)), cursor=st.tuples(i32, i32, i32, i32),
       shape=st.tuples(u32, u32), version=st.sampled_from([1, 1, 1, 0, 2]),
       extra=st.lists(st.tuples(u32, u32, u32, u32), max_size=70))
def test_any_header_is_a_record_or_a_native_stream_error(flags: int, size: tuple[int, int], n_rects: int,
                                                         cursor: tuple[int, int, int, int], shape: tuple[int, int],
                                                         version: int,
                                                         extra: list[tuple[int, int, int, int]]) -> None:
    """Fuzzed headers (right magic, any flags and numbers) and rectangles: the parser accepts or raises
    NativeStreamError, nothing else, and what it accepts is bounded (rectangles inside the frame, their pixels
    at most one frame, images at most 512 a side)."""
    data = HEADER.pack(MAGIC, version, flags, 0, *size, n_rects, *cursor, *shape)
    try:
        record = parse_header(data, W, H)
        found = parse_rects(rects(*extra)[: record.rects_size], record)
    except NativeStreamError:
        return
    assert record.n_rects <= 64 and record.shape_w <= 512 and record.shape_h <= 512
    assert all(r.w > 0 and r.h > 0 and r.x + r.w <= W and r.y + r.h <= H for r in found)
    assert record.pixels_size(found) <= W * H * 4
