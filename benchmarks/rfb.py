"""A minimal RFB (VNC) client for the screen benchmark: the peer's viewer, shaped like ours.

Drives x11vnc on the same workloads as Helpline's reference viewer
(:class:`agent.viewer.Viewer`): a BGR ``framebuffer``, ``stats`` (updates, bytes,
arrivals), ``region``, ``wait_for``, ``send_key``/``send_mouse``. It asks for one
incremental update at a time, as vncviewer does (that request is what paces the
server). Decodes Raw, Tight (fill, JPEG, copy/palette/gradient filters on the four zlib
streams) and ZRLE; the cursor is asked for as RichCursor so it stays out of the
framebuffer, as it does in Helpline's stream. PyPI's RFB clients (asyncvnc: Raw and
Zlib only; vncdotool: Twisted) decode neither Tight nor ZRLE, the encodings x11vnc is
measured with. RFB 3.8, security "None" only (a local benchmark server).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import simplejpeg

ENCODINGS = {"raw": 0, "tight": 7, "zrle": 16}
RICH_CURSOR, LAST_RECT, DESKTOP_SIZE = -239, -224, -223

#: KeyboardEvent.code → X keysym for the keys the benchmark presses.
KEYSYMS = {"KeyA": 0x61, "Space": 0x20, "Enter": 0xFF0D}


@dataclass
class RfbStats:
    updates: int = 0
    rects: int = 0
    bytes_received: int = 0
    refreshes: int = 0  # RFB has no lossless refinement pass; kept for the shared workload code
    arrivals: list[tuple[float, int]] = field(default_factory=list)


class RfbError(Exception):
    """The server said something this client does not understand."""


class _Reader:
    """Counts every byte read (the figure compared with Helpline's bytes)."""

    def __init__(self, reader: asyncio.StreamReader, stats: RfbStats) -> None:
        self.reader, self.stats = reader, stats

    async def exactly(self, n: int) -> bytes:
        data = await self.reader.readexactly(n)
        self.stats.bytes_received += n
        return data

    async def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack(fmt, await self.exactly(struct.calcsize(fmt)))

    async def compact_length(self) -> int:
        length, shift = 0, 0
        for _ in range(3):
            (b,) = await self.unpack("B")
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        return length


class RfbViewer:
    """One RFB connection to ``host:port``; use as an async context manager."""

    def __init__(self, host: str, port: int, encoding: Literal["tight", "zrle", "raw"] = "tight",
                 quality: int = 6, compression: int = 6) -> None:
        self.host, self.port = host, port
        self.encoding, self.quality, self.compression = encoding, quality, compression
        self.stats = RfbStats()
        self.framebuffer: npt.NDArray[np.uint8] = np.zeros((1, 1, 3), dtype=np.uint8)
        self.agent_stats = None  # the shared workload code reads Helpline's stats message here
        self._changed = asyncio.Condition()
        self._zlib = [zlib.decompressobj() for _ in range(4)]
        self._zrle = zlib.decompressobj()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._frame_bytes = 0
        self.closed = asyncio.Event()

    async def __aenter__(self) -> RfbViewer:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._writer = writer
        r = _Reader(reader, self.stats)
        version = await r.exactly(12)
        if not version.startswith(b"RFB 003."):
            raise RfbError(f"not an RFB server: {version!r}")
        writer.write(b"RFB 003.008\n")
        (count,) = await r.unpack("B")
        types = await r.exactly(count)
        if 1 not in types:
            raise RfbError(f"server offers no 'None' security: {list(types)}")
        writer.write(b"\x01")
        (result,) = await r.unpack(">I")
        if result:
            raise RfbError("security handshake failed")
        writer.write(b"\x01")  # shared
        w, h = await r.unpack(">HH")
        await r.exactly(16)  # server pixel format: we set ours below
        (name_len,) = await r.unpack(">I")
        await r.exactly(name_len)
        self.framebuffer = np.zeros((h, w, 3), dtype=np.uint8)
        # 32 bpp, depth 24, little endian, true colour, red at bit 16: bytes are B, G, R, X.
        writer.write(struct.pack(">B3xBBBBHHHBBB3x", 0, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0))
        wanted = [ENCODINGS[self.encoding], RICH_CURSOR, LAST_RECT, DESKTOP_SIZE]
        if self.encoding == "tight":
            wanted += [-32 + self.quality, -256 + self.compression]
        writer.write(struct.pack(">BxH", 2, len(wanted)) + b"".join(struct.pack(">i", e) for e in wanted))
        self._request(incremental=False)
        self._task = asyncio.create_task(self._read_loop(r), name="rfb-reader")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()

    # --- input ---------------------------------------------------------------------------

    def _request(self, incremental: bool) -> None:
        assert self._writer is not None
        h, w = self.framebuffer.shape[:2]
        self._writer.write(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, w, h))

    async def send_key(self, code: str, action: Literal["down", "up"]) -> None:
        assert self._writer is not None
        self._writer.write(struct.pack(">BBxxI", 4, int(action == "down"), KEYSYMS[code]))
        await self._writer.drain()

    async def send_mouse(self, x: int, y: int, action: str = "move", button: int = 0) -> None:
        assert self._writer is not None
        mask = 1 << button if action == "down" else 0
        self._writer.write(struct.pack(">BBHH", 5, mask, x, y))
        await self._writer.drain()

    # --- waiting (the reference viewer's API) --------------------------------------------

    async def wait_for(self, predicate: Callable[[RfbViewer], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self) or self.closed.is_set())
        if not predicate(self):
            raise ConnectionError("RFB connection closed before the condition held")

    def region(self, x: int, y: int, w: int, h: int) -> npt.NDArray[np.uint8]:
        return self.framebuffer[y : y + h, x : x + w]

    # --- reading -------------------------------------------------------------------------

    async def _read_loop(self, r: _Reader) -> None:
        try:
            while True:
                (kind,) = await r.unpack("B")
                if kind == 0:
                    await self._update(r)
                elif kind == 1:  # colour map: not with true colour
                    _, _, n = await r.unpack(">xHH")
                    await r.exactly(6 * n)
                elif kind == 2:  # bell
                    pass
                elif kind == 3:
                    (n,) = await r.unpack(">3xI")
                    await r.exactly(n)
                else:
                    raise RfbError(f"server message type {kind}")
        finally:
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def _update(self, r: _Reader) -> None:
        start = self.stats.bytes_received - 1
        (count,) = await r.unpack(">xH")
        for _ in range(count):
            x, y, w, h, enc = await r.unpack(">HHHHi")
            if enc == LAST_RECT:
                break
            if enc == RICH_CURSOR:
                await r.exactly(w * h * 4 + (w + 7) // 8 * h)
                continue
            if enc == DESKTOP_SIZE:
                self.framebuffer = np.zeros((h, w, 3), dtype=np.uint8)
                continue
            if enc == 0:
                data = await r.exactly(w * h * 4)
                self._put(x, y, np.frombuffer(data, np.uint8).reshape(h, w, 4)[:, :, :3])
            elif enc == 7:
                await self._tight(r, x, y, w, h)
            elif enc == 16:
                await self._zrle_rect(r, x, y, w, h)
            else:
                raise RfbError(f"encoding {enc} not asked for")
            self.stats.rects += 1
        self.stats.updates += 1
        self.stats.arrivals.append((time.monotonic(), self.stats.bytes_received - start))
        self._request(incremental=True)
        async with self._changed:
            self._changed.notify_all()

    def _put(self, x: int, y: int, bgr: npt.NDArray[np.uint8]) -> None:
        h, w = bgr.shape[:2]
        self.framebuffer[y : y + h, x : x + w] = bgr

    async def _tight(self, r: _Reader, x: int, y: int, w: int, h: int) -> None:
        (ctl,) = await r.unpack("B")
        for i in range(4):
            if ctl & (1 << i):
                self._zlib[i] = zlib.decompressobj()
        method = ctl >> 4
        if method == 0x8:  # fill: one TPIXEL (R, G, B)
            red, green, blue = await r.unpack("BBB")
            self.framebuffer[y : y + h, x : x + w] = (blue, green, red)
            return
        if method == 0x9:
            data = await r.exactly(await r.compact_length())
            self._put(x, y, np.asarray(simplejpeg.decode_jpeg(data, colorspace="BGR")))
            return
        if method & 0x8:
            raise RfbError(f"Tight method {method:#x}")
        stream = method & 0x3
        filter_id = (await r.unpack("B"))[0] if method & 0x4 else 0
        palette: npt.NDArray[np.uint8] | None = None
        if filter_id == 1:
            (n,) = await r.unpack("B")
            palette = np.frombuffer(await r.exactly(3 * (n + 1)), np.uint8).reshape(n + 1, 3)[:, ::-1]
            row = (w + 7) // 8 if n + 1 == 2 else w
            size = row * h
        elif filter_id in (0, 2):
            size = w * h * 3
        else:
            raise RfbError(f"Tight filter {filter_id}")
        if size < 12:
            raw = await r.exactly(size)
        else:
            raw = self._zlib[stream].decompress(await r.exactly(await r.compact_length()))
        if palette is not None:
            if len(palette) == 2:
                bits = np.unpackbits(np.frombuffer(raw, np.uint8).reshape(h, (w + 7) // 8), axis=1)[:, :w]
                self._put(x, y, palette[bits])
            else:
                self._put(x, y, palette[np.frombuffer(raw, np.uint8).reshape(h, w)])
        elif filter_id == 2:
            self._put(x, y, _ungradient(np.frombuffer(raw, np.uint8).reshape(h, w, 3))[:, :, ::-1])
        else:
            self._put(x, y, np.frombuffer(raw, np.uint8).reshape(h, w, 3)[:, :, ::-1])

    async def _zrle_rect(self, r: _Reader, x: int, y: int, w: int, h: int) -> None:
        (length,) = await r.unpack(">I")
        data = self._zrle.decompress(await r.exactly(length))
        pos = 0
        for ty in range(0, h, 64):
            for tx in range(0, w, 64):
                tw, th = min(64, w - tx), min(64, h - ty)
                pos = _zrle_tile(data, pos, self.framebuffer, x + tx, y + ty, tw, th)


def _ungradient(pred: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Undo Tight's gradient filter (RGB rows), row by row."""
    h, w, _ = pred.shape
    out = np.zeros((h, w, 3), dtype=np.int32)
    src = pred.astype(np.int32)
    for yy in range(h):
        for xx in range(w):
            left = out[yy, xx - 1] if xx else 0
            up = out[yy - 1, xx] if yy else 0
            upleft = out[yy - 1, xx - 1] if xx and yy else 0
            guess = np.clip(left + up - upleft, 0, 255) if (xx or yy) else np.zeros(3, np.int32)
            out[yy, xx] = (src[yy, xx] + guess) & 0xFF
    return out.astype(np.uint8)


def _zrle_tile(data: bytes, pos: int, fb: npt.NDArray[np.uint8], x: int, y: int, w: int, h: int) -> int:
    """Decode one ZRLE tile (CPIXEL = 3 bytes B, G, R) into ``fb``; return the new position."""
    sub = data[pos]
    pos += 1

    def cpixels(n: int) -> npt.NDArray[np.uint8]:
        nonlocal pos
        px = np.frombuffer(data, np.uint8, 3 * n, pos).reshape(n, 3)
        pos += 3 * n
        return px

    if sub == 0:
        fb[y : y + h, x : x + w] = cpixels(w * h).reshape(h, w, 3)
    elif sub == 1:
        fb[y : y + h, x : x + w] = cpixels(1)[0]
    elif 2 <= sub <= 16:
        palette = cpixels(sub)
        bits = 1 if sub == 2 else 2 if sub <= 4 else 4
        row = (w * bits + 7) // 8
        packed = np.frombuffer(data, np.uint8, row * h, pos).reshape(h, row)
        pos += row * h
        unpacked = np.unpackbits(packed, axis=1).reshape(h, row * 8 // bits, bits)[:, :w]
        index = np.zeros((h, w), dtype=np.int32)
        for b in range(bits):
            index = (index << 1) | unpacked[:, :, b]
        fb[y : y + h, x : x + w] = palette[index]
    elif sub == 128 or sub >= 130:
        rle_palette = cpixels(sub - 128) if sub >= 130 else None
        flat = np.empty((w * h, 3), dtype=np.uint8)
        i = 0
        while i < w * h:
            if rle_palette is None:
                colour = cpixels(1)[0]
                run = True
            else:
                code = data[pos]
                pos += 1
                colour, run = rle_palette[code & 0x7F], bool(code & 0x80)
            length = 1
            if run:
                length = 1
                while True:
                    b = data[pos]
                    pos += 1
                    length += b
                    if b != 255:
                        break
            flat[i : i + length] = colour
            i += length
        fb[y : y + h, x : x + w] = flat.reshape(h, w, 3)
    else:
        raise RfbError(f"ZRLE subencoding {sub}")
    return pos
