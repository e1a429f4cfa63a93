"""``/healthz`` (the process answers) and ``/readyz`` (it can do its work), unauthenticated.

Readiness: the database answers within :data:`READY_DEADLINE_S` (for SQLite the file on disk is
also opened afresh, read-only: the server's open handle keeps working on a file that was deleted
or replaced), every migration this code knows is applied, and both listeners are up. Otherwise
503 with the reasons. No URL, path or error text that could carry a secret is in the answer.
A result is reused for :data:`CACHE_S`, so probing it hard costs the database one query a second.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server.store.migrate import discover

if TYPE_CHECKING:
    from server.app import HelplineServer

READY_DEADLINE_S = 2.0
CACHE_S = 1.0


@dataclass
class Readiness:
    ready: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "unready", "checks": self.checks, "reasons": self.reasons}


class Health:
    def __init__(self, server: HelplineServer) -> None:
        self.server = server
        self.known = {m.version for m in discover()}
        self._last: tuple[float, Readiness] | None = None
        self._lock = asyncio.Lock()

    async def readiness(self) -> Readiness:
        async with self._lock:  # concurrent probes share one check
            if self._last is not None and time.monotonic() - self._last[0] < CACHE_S:
                return self._last[1]
            result = await self._check()
            self._last = (time.monotonic(), result)
            return result

    async def _check(self) -> Readiness:
        checks: dict[str, str] = {}
        reasons: list[str] = []
        applied: set[int] | None = None
        try:
            async with asyncio.timeout(READY_DEADLINE_S):
                applied = await self._database()
            checks["database"] = "ok"
        except TimeoutError:
            checks["database"] = "timeout"
            reasons.append(f"database did not answer within {READY_DEADLINE_S:g} s")
        except Exception as exc:
            checks["database"] = "unavailable"
            reasons.append(f"database unavailable ({type(exc).__name__})")
        if applied is not None:
            missing = sorted(self.known - applied)
            if missing:
                checks["migrations"] = "behind"
                reasons.append(f"migrations not applied: {', '.join(map(str, missing))}")
            else:
                checks["migrations"] = "current"
        else:
            checks["migrations"] = "unknown"
        if getattr(self.server, "listening", False):
            checks["listeners"] = "up"
        else:
            checks["listeners"] = "down"
            reasons.append("listeners are not up")
        return Readiness(not reasons, reasons, checks)

    async def _database(self) -> set[int]:
        db = self.server.db
        if db is None:
            raise RuntimeError("not started")
        rows = await db.fetchall("SELECT version FROM schema_migrations")
        url = self.server.config.db_url
        if url.startswith("sqlite:///"):
            await asyncio.to_thread(_read_sqlite_file, Path(url.removeprefix("sqlite:///")))
        return {int(r["version"]) for r in rows}


def _read_sqlite_file(path: Path) -> None:
    """Open the database file afresh, read-only, and read from it (raises when it cannot)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=READY_DEADLINE_S)
    try:
        conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()
    finally:
        conn.close()


HEALTH: web.AppKey[Health] = web.AppKey("helpline_health", Health)


async def healthz(_request: web.Request) -> web.Response:
    """The process is alive and its event loop answers (nothing else is checked)."""
    return web.json_response({"status": "alive"}, headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    """Ready to serve: database reachable in time, migrations current, listeners up; else 503 with reasons."""
    result = await request.app[HEALTH].readiness()
    return web.json_response(result.body(), status=200 if result.ready else 503, headers={"Cache-Control": "no-store"})
