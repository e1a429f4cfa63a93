"""Read-only access to session recordings for the console's player.

* ``GET /api/v1/sessions/{session_id}/recording`` → metadata (the recorder's ``.json`` plus the
  stream's size; ``complete`` is false while the session still records)
* ``GET /api/v1/sessions/{session_id}/recording/data`` → the ``.hlrec`` stream itself
  (records ``>dBBI`` + payload, see :mod:`server.sessions.relay`), audited as
  ``session.recording.view``

Both need REMOTE_VIEW on the session's device group (declared in :data:`ROUTES`). The file is
the one the relay wrote for this session (its stored path must name ``{session_id}.hlrec``),
so no request can reach any other file. A recording replays a user's screen, so every fetch
is audited.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server import api, audit
from server.api import scopes
from server.auth.rights import Right
from server.errors import ApiError
from server.store import Row

from . import repository, views

if TYPE_CHECKING:
    from server.app import HelplineServer

log = logging.getLogger(__name__)

RECORD_FORMAT = "hlrec1"


async def _recording(request: web.Request) -> tuple[Row, Path]:
    """The session row and its recording file; 404 ``no_recording`` when there is none to read."""
    session_id = request.match_info["session_id"]
    row = await repository.get(api.db(request), session_id)
    if row is None:
        raise ApiError.not_found("session")
    stored = row["recording_path"]
    if not stored:
        raise ApiError(404, "no_recording", "this session was not recorded")
    path = Path(stored)
    if path.name != f"{session_id}.hlrec":
        log.warning("recording path does not match its session; refusing it",
                    extra={"session_id": session_id, "path": stored})
        raise ApiError(404, "no_recording", "this session's recording is not available")
    if not await asyncio.to_thread(path.is_file):
        raise ApiError(404, "no_recording", "the recording file is gone")
    return row, path


def _read_meta(path: Path) -> dict[str, Any]:
    meta_path = path.with_suffix(".json")
    try:
        data = json.loads(meta_path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("unreadable recording metadata", extra={"path": str(meta_path), "error": str(exc)})
        return {}
    return data if isinstance(data, dict) else {}


async def recording_info(request: web.Request) -> web.Response:
    """Recording metadata"""
    row, path = await _recording(request)
    meta = await asyncio.to_thread(_read_meta, path)
    size = (await asyncio.to_thread(path.stat)).st_size
    return api.json(views.recording_view(row, size=size, meta=meta, record_format=RECORD_FORMAT))


async def recording_data(request: web.Request) -> web.StreamResponse:
    """Recording stream (.hlrec)"""
    row, path = await _recording(request)
    size = (await asyncio.to_thread(path.stat)).st_size
    await audit.append(api.db(request), api.principal(request).username, "session.recording.view", row["device_id"],
                       {"session_id": row["id"], "bytes": size})
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream",
                                           "Content-Disposition": f'attachment; filename="{row["id"]}.hlrec"'})


_NOT_FOUND = {404: "No such session, or no recording (`no_recording`)"}

ROUTES: list[api.Route] = [
    api.Route("GET", "/api/v1/sessions/{session_id}/recording", recording_info, Right.REMOTE_VIEW, scopes.SESSION,
              response="RecordingInfo", errors=_NOT_FOUND),
    api.Route("GET", "/api/v1/sessions/{session_id}/recording/data", recording_data, Right.REMOTE_VIEW,
              scopes.SESSION, errors=_NOT_FOUND,
              description="Records `>dBBI` + payload (see server/sessions/relay.py). Audited "
                          "`session.recording.view`.",
              content={"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}),
]


def setup(server: HelplineServer) -> None:
    api.add_routes(server.console_app, ROUTES)
