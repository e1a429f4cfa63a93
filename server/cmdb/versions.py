"""Debian-style version comparison (``epoch:upstream-revision``), as ``dpkg --compare-versions``.

Good enough for rpm-style versions too in the common cases ("which devices have
openssl < 3.0.13"): digits compare numerically, ``~`` sorts before everything.
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
