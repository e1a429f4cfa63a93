"""JPEGs without the parts libjpeg writes the same way every time (``Encoding.JPEG_LEAN``): the cut, the
rebuild, who gets them.

The encoder's file comes back byte for byte at every quality; anything else is sent whole or refused with a clear
error; the pipeline cuts only when told; the service passes it on only to session helpers that would not refuse the
unknown field. (The server's offer goes only to agents that say they read the field: tests/test_stream_batch.py.
The console's rebuild is compared byte for byte in Chromium: tests/test_console_session.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from agent.screen.capture import Monitor
from agent.screen.encoder import DecodeError, decode, encode_jpeg, jpeg_params
from agent.screen.pipeline import ScreenPipeline
from protocol.jpeg_tables import (
    JFIF_APP0,
    STANDARD_HUFFMAN_TABLES,
    quantisation_tables,
    restore_standard_tables,
    strip_standard_tables,
)
from protocol.stream import Encoding, unpack_update

ROOT = Path(__file__).resolve().parent.parent
#: What a lean JPEG saves: the JFIF marker, two quantisation and four Huffman tables, less the quality byte.
SAVED = len(JFIF_APP0) + 2 * 69 + len(STANDARD_HUFFMAN_TABLES) - 1


def _picture(seed: int, h: int = 64, w: int = 192) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(np.repeat(rng.integers(0, 256, (h, w // 4, 4), dtype=np.uint8), 4, axis=1))


@pytest.mark.parametrize("subsampling", ["444", "420"])
def test_the_cut_gives_the_encoders_file_back_byte_for_byte_at_every_quality(subsampling: str) -> None:
    picture = _picture(3, 32, 48)
    for quality in range(1, 101):
        jpeg = simplejpeg.encode_jpeg(picture, quality=quality, colorspace="BGRX", colorsubsampling=subsampling)
        lean = strip_standard_tables(jpeg, quality)
        assert lean is not None and lean[0] == quality and len(lean) == len(jpeg) - SAVED == len(jpeg) - 587
        header = lean[1 : lean.index(b"\xff\xda")]
        assert not any(marker in header for marker in (b"\xff\xe0", b"\xff\xdb", b"\xff\xc4"))
        assert restore_standard_tables(lean) == jpeg
        assert strip_standard_tables(jpeg, 100 - quality + 1 if quality != 50 else 51) is None  # not its tables


def test_other_tables_or_a_broken_header_go_whole_and_a_bad_lean_payload_is_refused() -> None:
    jpeg = encode_jpeg(_picture(1), 75)
    quality = jpeg_params(75)[0]
    at = jpeg.index(STANDARD_HUFFMAN_TABLES)
    other = bytearray(jpeg)
    other[at + 40] ^= 1  # one code of the AC luminance table changed: not the standard set
    assert strip_standard_tables(bytes(other), quality) is None
    quant = bytearray(jpeg)
    quant[jpeg.index(quantisation_tables(quality)) + 10] ^= 1  # one quantiser changed
    assert strip_standard_tables(bytes(quant), quality) is None
    assert strip_standard_tables(jpeg, 0) is None and strip_standard_tables(jpeg, 101) is None
    assert strip_standard_tables(b"\xff\xd8\xff\xe0\x00\x01", quality) is None  # a length below 2
    assert strip_standard_tables(b"not a jpeg", quality) is None
    # Not libjpeg's usual layout: the segment walk decides (a comment kept in place, or the file sent whole).
    comment = b"\xff\xfe\x00\x07hello"
    with_comment = jpeg[:at] + comment + jpeg[at:]
    kept = strip_standard_tables(with_comment, quality)
    assert kept is not None and comment in kept and restore_standard_tables(kept) == with_comment
    sos = jpeg.index(b"\xff\xda")
    assert strip_standard_tables(jpeg[:sos] + comment + jpeg[sos:], quality) is None  # tables not last
    third = jpeg[:at] + quantisation_tables(quality)[:69] + jpeg[at:]
    assert strip_standard_tables(third, quality) is None  # a cut segment the rebuild would not put back
    lean = strip_standard_tables(jpeg, quality)
    assert lean is not None
    with pytest.raises(ValueError, match="quality"):
        restore_standard_tables(b"\x00" + lean[1:])
    with pytest.raises(ValueError, match="no JFIF"):
        restore_standard_tables(bytes([quality]) + jpeg)  # it still has its tables: two sets once rebuilt
    for bad in (b"", b"\x2d", b"\x2d\xff\xd8", b"\x2d\xff\xd8\x00\x00\x00\x00", b"\x2dGIF89a" + jpeg):
        with pytest.raises(ValueError):
            restore_standard_tables(bad)
    with pytest.raises(DecodeError):
        decode(Encoding.JPEG_LEAN, b"\x2d\xff\xd8\xff\xda\x00\x02garbage", 4, 4)
    with pytest.raises(ValueError, match="outside"):
        quantisation_tables(0)


class _Frames:
    """A grabber showing one fixed picture."""

    def __init__(self, frame: np.ndarray) -> None:
        self.frame = frame

    def monitors(self) -> list[Monitor]:
        h, w = self.frame.shape[:2]
        return [Monitor(0, 0, w, h), Monitor(0, 0, w, h, True)]

    def grab(self, index: int) -> np.ndarray:
        return self.frame.copy()

    def close(self) -> None:
        pass


def test_the_pipeline_sends_lean_jpegs_only_when_told_and_they_draw_the_same_picture() -> None:
    frame = _picture(7, 256, 512)
    drawn = {}
    for lean in (False, True):
        update = ScreenPipeline(_Frames(frame), 1, lean_jpeg=lean).step(0.0, 75, 1).update
        assert update is not None
        parts = [unpack_update(m) for m in update.messages]
        encodings = {u.encoding for u in parts}
        assert encodings == ({Encoding.JPEG_LEAN} if lean else {Encoding.JPEG}), encodings
        picture = np.zeros((256, 512, 3), dtype=np.uint8)
        for u in parts:
            picture[u.y : u.y + u.h, u.x : u.x + u.w] = decode(u.encoding, u.payload, u.w, u.h)
        drawn[lean] = (picture, update.nbytes, len(parts))
    assert np.array_equal(drawn[True][0], drawn[False][0])  # the same JPEGs, drawn the same
    assert drawn[False][1] - drawn[True][1] == SAVED * drawn[True][2]  # 587 bytes fewer per image
