"""Read-only access to session recordings for the console's player.

* ``GET /api/v1/sessions/{session_id}/recording`` → metadata (the recorder's ``.json`` plus the
  stream's size; ``complete`` is false while the session still records)
* ``GET /api/v1/sessions/{session_id}/recording/data`` → the ``.hlrec`` stream itself
  (records ``>dBBI`` + payload, see :mod:`server.sessions.relay`), audited as
  ``session.recording.view``

Both need REMOTE_VIEW on the session's device group. The file is the one the relay wrote
for this session (its stored path must name ``{session_id}.hlrec``), so no request can
reach any other file. A recording replays a user's screen, so every fetch is audited.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import audit
from ..agent_channel import SERVER_KEY
from ..auth.middleware import require
from ..auth.rights import Principal, Right
from ..http_util import json_error

if TYPE_CHECKING:
    from ..app import HelplineServer

log = logging.getLogger(__name__)

RECORD_FORMAT = "hlrec1"


class _NoRecording(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def _recording(request: web.Request) -> tuple[dict[str, Any], Path, Principal]:
    """The session row, its recording file, and the caller (after the rights check)."""
    server: HelplineServer = request.app[SERVER_KEY]
    session_id = request.match_info["session_id"]
    row = await server.db.fetchone("SELECT * FROM sessions WHERE id = ?", (session_id,))
    if row is None:
        raise _NoRecording(404, "not_found", "no such session")
    principal = require(request, Right.REMOTE_VIEW, row["group_name"])
    stored = row["recording_path"]
    if not stored:
        raise _NoRecording(404, "no_recording", "this session was not recorded")
    path = Path(stored)
    if path.name != f"{session_id}.hlrec":
        log.warning("recording path does not match its session; refusing it",
                    extra={"session_id": session_id, "path": stored})
        raise _NoRecording(404, "no_recording", "this session's recording is not available")
    if not await asyncio.to_thread(path.is_file):
        raise _NoRecording(404, "no_recording", "the recording file is gone")
    return row, path, principal


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
    """GET: what the player needs before fetching the stream."""
    try:
        row, path, _principal = await _recording(request)
    except _NoRecording as exc:
        return json_error(exc.status, exc.code, exc.message)
    meta = await asyncio.to_thread(_read_meta, path)
    size = (await asyncio.to_thread(path.stat)).st_size
    return web.json_response({
        "session_id": row["id"], "device_id": row["device_id"], "group": row["group_name"],
        "technician": row["technician_user"], "mode": row["mode"], "answered_by": row["answered_by"],
        "started_at": row["started_at"], "ended_at": row["ended_at"], "end_reason": row["end_reason"],
        "format": RECORD_FORMAT, "size": size, "complete": bool(meta), "meta": meta,
        "data_url": f"/api/v1/sessions/{row['id']}/recording/data",
    })


async def recording_data(request: web.Request) -> web.StreamResponse:
    """GET: the recorded stream bytes (audited)."""
    try:
        row, path, principal = await _recording(request)
    except _NoRecording as exc:
        return json_error(exc.status, exc.code, exc.message)
    size = (await asyncio.to_thread(path.stat)).st_size
    server: HelplineServer = request.app[SERVER_KEY]
    await audit.append(server.db, principal.username, "session.recording.view", row["device_id"],
                       {"session_id": row["id"], "bytes": size})
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream",
                                           "Content-Disposition": f'attachment; filename="{row["id"]}.hlrec"'})


def setup(server: HelplineServer) -> None:
    router = server.console_app.router
    router.add_get("/api/v1/sessions/{session_id}/recording", recording_info)
    router.add_get("/api/v1/sessions/{session_id}/recording/data", recording_data)
