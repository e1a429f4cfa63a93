"""Audit records as they leave: read in order after a sequence number, as JSON and as RFC 5424.

A record carries what its hash covers, exactly as stored (``details`` is the canonical JSON
string, ``ts`` the stored float: JSON writes a float as its ``repr``, which the hash uses), plus
``prev_hash`` and ``hash``, so a receiver can check every link with
:func:`server.audit.record_hash` and notice a missing or altered record.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from server.store import Database

#: RFC 5424 PRI: facility 13 ("log audit") * 8 + severity 6 (informational).
PRI = 13 * 8 + 6
#: The structured-data id: IANA's documentation enterprise number (RFC 5612), as the private-use SD-ID.
SD_ID = "helpline@32473"
BOM = "\ufeff"


async def read_after(db: Database, seq: int, limit: int) -> list[dict[str, Any]]:
    rows = await db.fetchall(
        "SELECT seq, ts, actor, action, target, details, prev_hash, hash FROM audit_log"
        " WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
    return [{"seq": int(r["seq"]), "ts": float(r["ts"]), "actor": r["actor"], "action": r["action"],
             "target": r["target"], "details": r["details"], "prev_hash": r["prev_hash"], "hash": r["hash"]}
            for r in rows]


async def head_seq(db: Database) -> int:
    row = await db.fetchone("SELECT MAX(seq) AS seq FROM audit_log")
    return int(row["seq"]) if row is not None and row["seq"] is not None else 0


def json_line(record: dict[str, Any], node: str) -> bytes:
    return json.dumps({**record, "node": node}, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _sd_value(value: str) -> str:
    """RFC 5424 §6.3.3: escape ``"``, ``\\`` and ``]`` in a PARAM-VALUE."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_token(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` characters, ``-`` if empty."""
    text = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return text or "-"


def syslog_message(record: dict[str, Any], hostname: str, procid: int) -> bytes:
    """One RFC 5424 message: the chain fields as structured data, the whole record as JSON in MSG."""
    stamp = datetime.fromtimestamp(record["ts"], UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    params = " ".join(f'{k}="{_sd_value(str(record[f]))}"' for k, f in (
        ("seq", "seq"), ("hash", "hash"), ("prev", "prev_hash"), ("actor", "actor"), ("action", "action"),
        ("target", "target")))
    msg = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    line = (f"<{PRI}>1 {stamp} {_header_token(hostname, 255)} helpline {procid} "
            f"{_header_token(record['action'], 32)} [{SD_ID} {params}] {BOM}{msg}")
    return line.encode()


def octet_counted(message: bytes) -> bytes:
    """RFC 5425 §4.3 framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode() + b" " + message
