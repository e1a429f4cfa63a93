"""Logged-in users and their sessions, as the OS's utmp records them (psutil.users())."""

from __future__ import annotations

from typing import Any

import psutil

from agent.collectors._util import iso_utc


def collect_users() -> dict[str, Any]:
    """Sessions sorted by (user, terminal, start); ``users`` is the distinct login names."""
    sessions = [
        {
            "name": u.name,
            "terminal": u.terminal or None,
            "host": u.host or None,
            "started": iso_utc(u.started),
            "pid": u.pid,
        }
        for u in psutil.users()
    ]
    sessions.sort(key=lambda s: (s["name"], s["terminal"] or "", s["started"]))
    return {"users": sorted({s["name"] for s in sessions}), "sessions": sessions, "unavailable": {}}
