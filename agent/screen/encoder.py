"""Encode screen regions: JPEG for motion, PNG (lossless) for text and refinement.

All encoders take a BGRA (h, w, 4) uint8 view (not necessarily contiguous) and return
the payload bytes for :mod:`protocol.stream`. simplejpeg and zlib release the GIL, so
encoding in a worker thread leaves the event loop free. ``decode`` is the inverse used
by the reference viewer.
"""

from __future__ import annotations

import functools
import struct
import zlib

import numpy as np
import numpy.typing as npt
import simplejpeg

from protocol.jpeg_tables import restore_standard_tables
from protocol.stream import Encoding

Pixels = npt.NDArray[np.uint8]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: zlib level for lossless payloads: 1 is several times faster than 6 and screen content
#: (flat areas, text) compresses nearly as well.
ZLIB_LEVEL = 1


#: From this quality up, JPEG keeps full-resolution colour (4:4:4) at a lower libjpeg quality.
#: Measured on a 1080p testsrc2 frame: 4:2:0 tops out at 26.8 dB whatever the quality (the
#: chroma of saturated colour edges is gone), while 4:4:4 at libjpeg quality 40 gives 31 dB for
#: 1.3x the bytes of 4:2:0 at 75, and 36.5 dB at 75; screen content (coloured text, UI) gains alike.
CHROMA_FULL_FROM = 60
#: libjpeg quality = ladder quality minus this, in the 4:4:4 part of the ladder.
CHROMA_FULL_OFFSET = 30


@functools.cache  # asked for every JPEG of every frame: 20 of the 20..90 steps at most
def jpeg_params(quality: int) -> tuple[int, str]:
    """(libjpeg quality, chroma subsampling) for a step of the session's quality ladder.

    The ladder (20..90) is monotonic in fidelity: low steps are 4:2:0, high steps 4:4:4
    at a lower libjpeg quality, which costs fewer bytes per dB than raising 4:2:0's.
    """
    if quality >= CHROMA_FULL_FROM:
        return max(1, quality - CHROMA_FULL_OFFSET), "444"
    return quality, "420"


def encode_jpeg(bgra: Pixels, quality: int) -> bytes:
    """JPEG of a BGRA region at ladder step ``quality`` (see :func:`jpeg_params`); X padding ignored."""
    q, subsampling = jpeg_params(quality)
    return bytes(
        simplejpeg.encode_jpeg(bgra, quality=q, colorspace="BGRX", colorsubsampling=subsampling, fastdct=True)
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(bgra: Pixels, level: int = ZLIB_LEVEL) -> bytes:
    """Lossless PNG (RGB, filter 'up') that browsers decode natively with createImageBitmap."""
    h, w = bgra.shape[:2]
    # "up" filter on the 4-byte pixels (contiguous runs: fast), then BGR -> RGB one channel
    # at a time: a (h, w, 3) copy with reversed channels walks 3 bytes per inner loop and
    # cost 14x more than the rest of the filtering (22 ns per pixel).
    up = np.empty(bgra.shape, dtype=np.uint8)  # BGRA, or BGR (the reference viewer's snapshot)
    up[:1] = bgra[:1]
    np.subtract(bgra[1:], bgra[:-1], out=up[1:])
    rows = np.empty((h, 1 + w * 3), dtype=np.uint8)
    rows[:, 0] = 2  # "up" filter: flat screen areas become runs of zeros
    body = rows[:, 1:].reshape(h, w, 3)
    for c in range(3):
        body[:, :, c] = up[:, :, 2 - c]
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(rows.tobytes(), level)
    return b"".join((_PNG_SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", idat), _chunk(b"IEND", b"")))


def uniform_colour(bgra: Pixels) -> bytes | None:
    """The B, G, R bytes of a region that is one colour throughout (a FILL payload), else None.

    Whole 32-bit pixels are compared (the X padding byte is constant), a few single pixels,
    the edges and the middle row and column first: a region with any detail fails there, so
    motion pays almost nothing.
    """
    px = bgra.view(np.uint32)[..., 0]
    h, w = px.shape
    first = int(px[0, 0])
    # Four single pixels, then the edges and the middle cross, before the whole area: a picture
    # fails on the pixels for a microsecond, where each array comparison costs several.
    if (int(px[-1, -1]) != first or int(px[h // 2, w // 2]) != first or int(px[0, -1]) != first
            or int(px[-1, 0]) != first):
        return None
    for line in (px[0], px[:, 0], px[-1], px[:, -1], px[h // 2], px[:, w // 2]):
        if not (line == first).all():
            return None
    if not (px == first).all():
        return None
    return bgra[0, 0, :3].tobytes()


def encode_zlib(bgra: Pixels, level: int = ZLIB_LEVEL) -> bytes:
    """zlib of BGR24 rows: the cheapest lossless form for non-browser viewers."""
    return zlib.compress(np.ascontiguousarray(bgra[:, :, :3]).tobytes(), level)


class DecodeError(ValueError):
    """A payload does not decode to the rectangle its header announced."""


def _decode_png(data: bytes, w: int, h: int) -> Pixels:
    if not data.startswith(_PNG_SIGNATURE):
        raise DecodeError("not a PNG")
    pos, idat, ihdr = 8, [], b""
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = chunk
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
    if len(ihdr) != 13 or struct.unpack(">IIBBBBB", ihdr) != (w, h, 8, 2, 0, 0, 0):
        raise DecodeError("unsupported PNG header")
    decompressor = zlib.decompressobj()
    raw = decompressor.decompress(b"".join(idat), h * (1 + w * 3) + 1)
    if len(raw) != h * (1 + w * 3):
        raise DecodeError("PNG data has the wrong size")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, 1 + w * 3)
    if h and (rows[:, 0] == 2).all():  # what encode_png writes: "up" everywhere is a running sum down the rows
        up = np.cumsum(rows[:, 1:], axis=0, dtype=np.uint8)  # uint8 wraps mod 256, as the filter does
        return np.ascontiguousarray(up.reshape(h, w, 3)[:, :, ::-1])
    out = np.empty((h, w * 3), dtype=np.uint8)
    for r in range(h):
        f, line = rows[r, 0], rows[r, 1:]
        if f == 0:
            out[r] = line
        elif f == 2:
            out[r] = line + out[r - 1] if r else line
        elif f == 1:
            out[r] = np.cumsum(line.reshape(w, 3), axis=0, dtype=np.uint8).reshape(-1)
        else:
            raise DecodeError(f"PNG filter {f} not supported")
    return np.ascontiguousarray(out.reshape(h, w, 3)[:, :, ::-1])


def decode(encoding: Encoding, payload: bytes, w: int, h: int) -> Pixels:
    """BGR (h, w, 3) pixels of one update payload; raises DecodeError on mismatch."""
    try:
        if encoding is Encoding.JPEG:
            img = simplejpeg.decode_jpeg(payload, colorspace="BGR")
        elif encoding is Encoding.JPEG_LEAN:
            img = simplejpeg.decode_jpeg(restore_standard_tables(payload), colorspace="BGR")
        elif encoding is Encoding.FILL:
            if len(payload) != 3:
                raise DecodeError("fill payload is not one BGR pixel")
            return np.broadcast_to(np.frombuffer(payload, dtype=np.uint8), (h, w, 3)).copy()
        elif encoding is Encoding.PNG:
            img = _decode_png(payload, w, h)
        elif encoding is Encoding.ZLIB:
            d = zlib.decompressobj()
            raw = d.decompress(payload, w * h * 3 + 1)
            img = np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
        elif encoding is Encoding.RAW:
            img = np.frombuffer(payload, dtype=np.uint8).reshape(h, w, 4)[:, :, :3]
        else:
            raise DecodeError(f"encoding {encoding!r} not supported")
    except (ValueError, zlib.error) as exc:
        raise DecodeError(f"cannot decode {encoding.name} {w}x{h}: {exc}") from exc
    if img.shape != (h, w, 3):
        raise DecodeError(f"{encoding.name} payload is {img.shape}, header says {w}x{h}")
    return np.asarray(img, dtype=np.uint8)
