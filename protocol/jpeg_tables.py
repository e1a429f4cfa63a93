"""JPEGs without the parts libjpeg writes the same way every time: the ``JPEG_LEAN`` stream encoding (sans-I/O).

libjpeg (simplejpeg, baseline, without Huffman optimisation) starts every image with the same JFIF
marker (18 bytes), two quantisation tables that depend only on the quality (the tables of ITU T.81
Annex K.1, scaled as the IJG library scales them: 138 bytes) and, right before the scan, the four
typical Huffman tables of Annex K.3 (432 bytes). A video update of twenty JPEGs spent a sixth of its
bytes on them. A ``JPEG_LEAN`` payload is one byte, the libjpeg quality, then the JPEG without those
segments; the viewer rebuilds them and gets the encoder's file back byte for byte. An image whose
header holds anything else there is sent as a plain JPEG (:func:`strip_standard_tables` returns None).

The console rebuilds the same bytes (``console/static/js/screen.js``; a test compares them in Chromium).
"""

from __future__ import annotations

import functools

#: An agent's hello capability: it reads ``session.offer.jpeg_lean`` and can send ``JPEG_LEAN``.
CAPABILITY = "stream.jpeg-lean"

#: libjpeg's JFIF APP0 segment: version 1.01, no density units, aspect 1:1, no thumbnail.
JFIF_APP0 = bytes.fromhex("ffe000104a46494600010100000100010000")

#: The four DHT segments libjpeg writes, in its order: DC luminance, AC luminance, DC chrominance,
#: AC chrominance (T.81 Tables K.3, K.5, K.4, K.6).
STANDARD_HUFFMAN_TABLES = bytes.fromhex(
    "ffc4001f0000010501010101010100000000000000000102030405060708090a0b"
    "ffc400b5100002010303020403050504040000017d01020300041105122131410613516107227114328191a1082342b1c115"
    "52d1f02433627282090a161718191a25262728292a3435363738393a434445464748494a535455565758595a636465666768"
    "696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6"
    "c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa"
    "ffc4001f0100030101010101010101010000000000000102030405060708090a0b"
    "ffc400b51100020102040403040705040400010277000102031104052131061241510761711322328108144291a1b1c10923"
    "3352f0156272d10a162434e125f11718191a262728292a35363738393a434445464748494a535455565758595a6364656667"
    "68696a737475767778797a82838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4"
    "c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9fa"
)

#: T.81 Table K.1 (luminance) and K.2 (chrominance) quantisation tables, in natural (row by row) order.
LUMINANCE_QUANTISATION = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
CHROMINANCE_QUANTISATION = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32),
)
#: For each position of a DQT segment (zig-zag order), the natural-order index of the coefficient.
ZIGZAG = (
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7,
    14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46,
    53, 60, 61, 54, 47, 55, 62, 63,
)

_SOI = b"\xff\xd8"
_SOS = 0xDA
#: The segments a lean JPEG leaves out (JFIF APP0, DQT, DHT): none may remain in its header.
_CUT = frozenset({0xE0, 0xDB, 0xC4})
#: Headers (everything before SOS) are read this far at most: libjpeg's are about 600 bytes.
_HEADER_LIMIT = 64 * 1024


@functools.cache  # a hundred qualities at most; built once each (37 us), asked for every image
def quantisation_tables(quality: int) -> bytes:
    """The two DQT segments libjpeg writes at ``quality`` (1..100): Annex K's tables, IJG-scaled, baseline."""
    if not 1 <= quality <= 100:
        raise ValueError(f"libjpeg quality {quality} outside 1..100")
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    out = bytearray()
    for table_id, table in enumerate((LUMINANCE_QUANTISATION, CHROMINANCE_QUANTISATION)):
        out += b"\xff\xdb\x00\x43" + bytes([table_id])
        out += bytes(min(255, max(1, (table[n] * scale + 50) // 100)) for n in ZIGZAG)
    return bytes(out)


def _segments(data: bytes) -> tuple[list[tuple[int, int, int]], int] | None:
    """The marker segments after SOI up to SOS as (marker, start, end), and where SOS starts; None if malformed."""
    if not data.startswith(_SOI):
        return None
    found: list[tuple[int, int, int]] = []
    pos, end = 2, min(len(data), _HEADER_LIMIT)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == _SOS:
            return found, pos
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            return None
        found.append((marker, pos, pos + 2 + length))
        pos += 2 + length
    return None


def _one_segment_then_tables(jpeg: bytes, pos: int) -> int | None:
    """Where the standard Huffman tables start when one segment (not a cut one) at ``pos`` is followed by them
    and then by SOS; else None (the segment walk decides)."""
    if jpeg[pos : pos + 1] != b"\xff" or len(jpeg) < pos + 4 or jpeg[pos + 1] in _CUT or jpeg[pos + 1] == _SOS:
        return None
    tables = pos + 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
    sos = tables + len(STANDARD_HUFFMAN_TABLES)
    if jpeg[tables:sos] != STANDARD_HUFFMAN_TABLES or jpeg[sos : sos + 2] != bytes((0xFF, _SOS)):
        return None
    return tables


@functools.cache
def _standard_head(quality: int) -> bytes:
    """What every libjpeg image of ``quality`` starts with: SOI, the JFIF marker, the two tables."""
    return _SOI + JFIF_APP0 + quantisation_tables(quality)


def strip_standard_tables(jpeg: bytes, quality: int) -> bytes | None:
    """The ``JPEG_LEAN`` payload of a JPEG libjpeg encoded at ``quality``, or None (send it whole) unless its
    header is: the JFIF marker, the two tables of that quality, other segments, the four standard Huffman tables."""
    if not 1 <= quality <= 100:
        return None
    head = _standard_head(quality)
    if not jpeg.startswith(head):
        return None
    frame = _one_segment_then_tables(jpeg, len(head))
    if frame is not None:  # what libjpeg writes: the frame header alone between the two
        return b"".join((bytes([quality]), _SOI, jpeg[len(head) : frame], jpeg[frame + len(STANDARD_HUFFMAN_TABLES) :]))
    parsed = _segments(jpeg)
    if parsed is None:
        return None
    segments, sos = parsed
    tables = sos - len(STANDARD_HUFFMAN_TABLES)
    starts = [start for _, start, _ in segments]
    between = {marker for marker, start, _ in segments if len(head) <= start < tables}
    if tables not in starts or jpeg[tables:sos] != STANDARD_HUFFMAN_TABLES or between & _CUT:
        return None
    return bytes([quality]) + _SOI + jpeg[len(head) : tables] + jpeg[sos:]


def restore_standard_tables(payload: bytes) -> bytes:
    """The JPEG a ``JPEG_LEAN`` payload came from; ValueError when the payload is not one."""
    if not payload or not 1 <= payload[0] <= 100:
        raise ValueError("a lean JPEG starts with its libjpeg quality (1..100)")
    body = payload[1:]
    parsed = _segments(body)
    if parsed is None:
        raise ValueError("not a JPEG with a well-formed header")
    segments, sos = parsed
    if any(marker in _CUT for marker, _, _ in segments):
        raise ValueError("a lean JPEG carries no JFIF marker, quantisation or Huffman table")
    return b"".join((_SOI, JFIF_APP0, quantisation_tables(payload[0]), body[2:sos], STANDARD_HUFFMAN_TABLES,
                     body[sos:]))
