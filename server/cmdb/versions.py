"""Debian-style version comparison (``epoch:upstream-revision``), as ``dpkg --compare-versions``.

Good enough for rpm-style versions too in the common cases ("which devices have
openssl < 3.0.13"): digits compare numerically, ``~`` sorts before everything.

:func:`key` turns a version into bytes whose plain byte order is exactly :func:`compare`'s order,
so the database can answer "below version Y" with an index range instead of Python comparing
every row (the ``software.version_key`` column, filled at ingest).
"""

from __future__ import annotations

import re
from functools import cmp_to_key

_DIGITS = re.compile(r"\d+")


def _split(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.partition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
    return (int(epoch) if epoch.isdigit() else 0), upstream, revision


def _order(char: str) -> int:
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    while a or b:
        # Non-digit prefix, compared char by char with dpkg's ordering.
        pa = re.match(r"\D*", a)
        pb = re.match(r"\D*", b)
        sa, sb = (pa.group() if pa else ""), (pb.group() if pb else "")
        for i in range(max(len(sa), len(sb))):
            ca = _order(sa[i]) if i < len(sa) else 0
            cb = _order(sb[i]) if i < len(sb) else 0
            if ca != cb:
                return -1 if ca < cb else 1
        a, b = a[len(sa):], b[len(sb):]
        da, db = _DIGITS.match(a), _DIGITS.match(b)
        ia = int(da.group()) if da else 0
        ib = int(db.group()) if db else 0
        if ia != ib:
            return -1 if ia < ib else 1
        a, b = a[len(da.group()) if da else 0:], b[len(db.group()) if db else 0:]
    return 0


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, equal to or newer than ``b``."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


sort_key = cmp_to_key(compare)


# --- sortable keys ----------------------------------------------------------------------------
#
# compare() walks a version part as (non-digit run, number) pairs until both sides are used up; a
# side that is used up counts as ("", 0). The key writes each pair as: every character's rank
# (_order + 2, so "~" = 1 sorts before the run's end mark 2, which sorts before letters and then
# everything else), the end mark, then the number as its digit count and digits (leading zeros
# dropped, so numbers order by length, then digit by digit). A part ends with one more end mark:
# that is what a used-up side's ("", 0) pairs compare as, since every pair after the first starts
# with a character. Ranks and counts are written as order-preserving varints (1 to 3 bytes).

_END = 2


def _varint(value: int) -> bytes:
    """Bytes that order like the numbers: one byte below 0x80, two below 0x4000, three up to 0x3FFFFF."""
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes((0x80 | value >> 8, value & 0xFF))
    if value < 0x400000:
        return bytes((0xC0 | value >> 16, value >> 8 & 0xFF, value & 0xFF))
    raise ValueError("too large for a version key")


def _number_key(digits: str) -> bytes:
    text = str(int(digits)) if digits else "0"
    text = "" if text == "0" else text
    return _varint(len(text)) + text.encode("ascii")


def _part_key(part: str) -> bytes:
    out = bytearray()
    first = True
    while part or first:
        first = False
        match = re.match(r"\D*", part)
        run = match.group() if match else ""
        for char in run:
            out += _varint(_order(char) + 2)
        out += _varint(_END)
        part = part[len(run):]
        digits = _DIGITS.match(part)
        out += _number_key(digits.group() if digits else "")
        part = part[len(digits.group()) if digits else 0:]
    out += _varint(_END)
    return bytes(out)


def key(version: str) -> bytes:
    """Bytes that sort as :func:`compare` orders versions: ``compare(a, b) < 0`` iff ``key(a) < key(b)``."""
    epoch, upstream, revision = _split(version)
    return _number_key(str(epoch)) + _part_key(upstream) + _part_key(revision)
