"""JPEGs without their standard Huffman tables: the ``JPEG_LEAN`` stream encoding (sans-I/O).

libjpeg (simplejpeg, without Huffman optimisation) writes the same four Huffman tables into every
image: the typical tables of ITU T.81 Annex K.3, 432 bytes. A video update of twenty JPEGs spends a
seventh of its bytes on them. A ``JPEG_LEAN`` payload is a JPEG with exactly those four DHT segments
cut out from in front of its SOS segment; the viewer puts :data:`STANDARD_HUFFMAN_TABLES` back at
the same place, which gives back the encoder's file byte for byte. An image with any other table is
sent as a plain JPEG (:func:`strip_standard_tables` returns None).

The console restores the same constant (``console/static/js/screen.js``; a test keeps them equal).
"""

from __future__ import annotations

#: An agent's hello capability: it reads ``session.offer.jpeg_lean`` and can send ``JPEG_LEAN``.
CAPABILITY = "stream.jpeg-lean"

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

_SOI = b"\xff\xd8"
_DHT, _SOS = 0xC4, 0xDA
#: Headers (everything before SOS) are read this far at most: libjpeg's are about 600 bytes.
_HEADER_LIMIT = 64 * 1024


def _header(data: bytes) -> tuple[int, int] | None:
    """(where the SOS marker starts, where the first DHT segment starts or -1), walking the marker segments
    after SOI; None when the header is malformed."""
    if not data.startswith(_SOI):
        return None
    pos, end, first_dht = 2, min(len(data), _HEADER_LIMIT), -1
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == _SOS:
            return pos, first_dht
        if marker == _DHT and first_dht < 0:
            first_dht = pos
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            return None
        pos += 2 + length
    return None


def strip_standard_tables(jpeg: bytes) -> bytes | None:
    """``jpeg`` without the standard Huffman tables in front of its SOS, or None when its header does not end
    with exactly them and hold no other (other tables, another order, a malformed header): send it whole then."""
    found = _header(jpeg)
    if found is None:
        return None
    sos, first_dht = found
    start = sos - len(STANDARD_HUFFMAN_TABLES)
    if first_dht != start or jpeg[start:sos] != STANDARD_HUFFMAN_TABLES:
        return None
    return jpeg[:start] + jpeg[sos:]


def restore_standard_tables(payload: bytes) -> bytes:
    """The JPEG a ``JPEG_LEAN`` payload came from; ValueError when the payload is not one."""
    found = _header(payload)
    if found is None:
        raise ValueError("not a JPEG with a well-formed header")
    sos, first_dht = found
    if first_dht >= 0:
        raise ValueError("a lean JPEG carries no Huffman tables")
    return payload[:sos] + STANDARD_HUFFMAN_TABLES + payload[sos:]
