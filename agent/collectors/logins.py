"""Login history (personal data): who logged in, where from and when, from wtmp and lastlog.

* ``entries``: the newest logins (``USER_PROCESS`` records of /var/log/wtmp) within the window
  the server allows (``since_days``, the server's login history retention), newest first,
  at most :data:`MAX_ENTRIES`.
* ``last``: each account's last login, from lastlog2's database (Debian 13+, util-linux),
  else the classic /var/log/lastlog, else the newest wtmp entry, also within the window.

wtmp and lastlog are binary files of fixed-size records; they are parsed with :mod:`struct`
(glibc's ``struct utmp`` and ``struct lastlog`` layouts on Linux, 32-bit times on every
architecture) rather than by running ``last``, whose text format differs between versions.
When a device's group does not collect personal data the agent leaves this section out.
"""

from __future__ import annotations

import sqlite3
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from agent.collectors._util import iso_utc

WTMP = Path("/var/log/wtmp")
LASTLOG = Path("/var/log/lastlog")
LASTLOG2 = Path("/var/lib/lastlog/lastlog2.db")
PASSWD = Path("/etc/passwd")

#: glibc ``struct utmp`` (384 bytes): type, pid, line, id, user, host, exit, session, tv, addr_v6.
UTMP = struct.Struct("<h2xi32s4s32s256shhiii16s20x")
#: glibc ``struct lastlog`` (292 bytes), one record per uid at offset ``uid * size``.
LASTLOG_RECORD = struct.Struct("<i32s256s")
USER_PROCESS = 7
MAX_ENTRIES = 500
#: Read at most this much of the end of wtmp (about 43,000 records).
MAX_WTMP_BYTES = 16 * 1024 * 1024
DEFAULT_DAYS = 90


def _cstr(raw: bytes) -> str | None:
    text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()
    return text or None


def parse_wtmp(data: bytes) -> Iterator[dict[str, Any]]:
    """Login records (``USER_PROCESS``) of a wtmp/utmp byte string, in file order."""
    usable = len(data) - len(data) % UTMP.size
    for offset in range(0, usable, UTMP.size):
        ut_type, _pid, line, _id, user, host, _t, _e, _session, seconds, _usec, _addr = UTMP.unpack_from(data, offset)
        name = _cstr(user)
        if ut_type != USER_PROCESS or name is None or seconds <= 0:
            continue
        yield {"user": name, "terminal": _cstr(line), "host": _cstr(host), "time": iso_utc(seconds),
               "_ts": seconds}


def read_tail(path: Path, limit: int = MAX_WTMP_BYTES) -> bytes:
    """The last ``limit`` bytes of ``path``, aligned to whole utmp records."""
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        start = max(0, size - limit)
        start -= start % UTMP.size
        handle.seek(start)
        return handle.read()


def _lastlog_entry(name: str, record: bytes) -> dict[str, Any] | None:
    seconds, line, host = LASTLOG_RECORD.unpack(record)
    if seconds <= 0:
        return None
    return {"user": name, "terminal": _cstr(line), "host": _cstr(host), "time": iso_utc(seconds), "_ts": seconds}


def parse_lastlog(data: bytes, uids: Iterable[tuple[str, int]]) -> dict[str, dict[str, Any]]:
    """Last login per user from a /var/log/lastlog byte string (records indexed by uid)."""
    last: dict[str, dict[str, Any]] = {}
    for name, uid in uids:
        offset = uid * LASTLOG_RECORD.size
        entry = _lastlog_entry(name, data[offset:offset + LASTLOG_RECORD.size]) \
            if offset + LASTLOG_RECORD.size <= len(data) else None
        if entry is not None:
            last[name] = entry
    return last


def read_lastlog(path: Path, uids: Iterable[tuple[str, int]]) -> dict[str, dict[str, Any]]:
    """Seek to each uid's record instead of reading the (sparse, up to GBs) file whole."""
    last: dict[str, dict[str, Any]] = {}
    with path.open("rb") as handle:
        for name, uid in uids:
            handle.seek(uid * LASTLOG_RECORD.size)
            record = handle.read(LASTLOG_RECORD.size)
            entry = _lastlog_entry(name, record) if len(record) == LASTLOG_RECORD.size else None
            if entry is not None:
                last[name] = entry
    return last


def read_lastlog2(path: Path) -> dict[str, dict[str, Any]]:
    """Last login per user from lastlog2's SQLite database (table ``Lastlog2``), opened read-only."""
    last: dict[str, dict[str, Any]] = {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0) as conn:
        for name, seconds, tty, host in conn.execute("SELECT Name, Time, TTY, RemoteHost FROM Lastlog2"):
            if isinstance(name, str) and isinstance(seconds, int) and seconds > 0:
                last[name] = {"user": name, "terminal": tty or None, "host": host or None,
                              "time": iso_utc(seconds), "_ts": seconds}
    return last


def _passwd_uids(path: Path) -> list[tuple[str, int]]:
    uids = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[0] and fields[2].isdigit():
            uids.append((fields[0], int(fields[2])))
    return uids


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if not k.startswith("_")}


def collect_logins(since_days: int | None = DEFAULT_DAYS, *, now: float | None = None, wtmp: Path = WTMP,
                   lastlog: Path = LASTLOG, lastlog2: Path = LASTLOG2, passwd: Path = PASSWD) -> dict[str, Any]:
    """Recent logins and each account's last login, nothing older than ``since_days``."""
    unavailable: dict[str, str] = {}
    cutoff = (now if now is not None else time.time()) - since_days * 86400 if since_days else 0
    entries: list[dict[str, Any]] = []
    try:
        entries = [e for e in parse_wtmp(read_tail(wtmp)) if e["_ts"] >= cutoff]
    except OSError as exc:
        unavailable["entries"] = f"cannot read {wtmp}: {exc.strerror or exc}"
    entries.sort(key=lambda e: e["_ts"], reverse=True)
    last: dict[str, dict[str, Any]] = {}
    source = None
    try:
        if lastlog2.exists():
            last, source = read_lastlog2(lastlog2), "lastlog2"
        elif lastlog.exists():
            last, source = read_lastlog(lastlog, _passwd_uids(passwd)), "lastlog"
    except (OSError, sqlite3.Error) as exc:
        unavailable["last"] = f"cannot read {lastlog2 if source is None else source}: {exc}"
    for entry in reversed(entries):  # wtmp fills in what lastlog lacks (or everything without one)
        known = last.get(entry["user"])
        if known is None or known["_ts"] < entry["_ts"]:
            last[entry["user"]] = entry
    recent = sorted((e for e in last.values() if e["_ts"] >= cutoff), key=lambda e: (-e["_ts"], e["user"]))
    return {
        "retention_days": since_days,
        "entries": [_public(e) for e in entries[:MAX_ENTRIES]],
        "last": [_public(e) for e in recent[:MAX_ENTRIES]],
        "unavailable": unavailable,
    }
