"""Read-only access to session recordings for the console's player.

* ``GET /api/v1/sessions/{session_id}/recording`` → metadata (the recorder's ``.json`` plus the
  stream's size; ``complete`` is false while the session still records)
* ``GET /api/v1/sessions/{session_id}/recording/data`` → the ``.hlrec`` stream itself
  (records ``>dBBI`` + payload, see :mod:`server.sessions.relay`), audited as
  ``session.recording.view``

A recording replays a user's screen, so few may read it: the session's own technician (who
saw it live; still with REMOTE_VIEW on the group) and holders of VIEW_RECORDINGS on the group
(auditors; admins have it). The route declares either right; :func:`_recording` refuses a
REMOTE_VIEW holder who was not the session's technician. The file is the one the relay wrote
for this session (its stored path must name ``{session_id}.hlrec``), so no request can reach
any other file. Every fetch of the stream is audited.
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
from server.storage.keys import legacy_sealer, sealing_key_of, storage_key_of
from server.storage.objects import ObjectStore, ensure_local, from_config, recording_names
from server.storage.sealed import StorageKey, plaintext_size
from server.storage.serve import send_file
from server.store import Row

from . import repository, views
from .settings import SessionSettings

#: The key that opens sealed recordings (loaded when its file exists, even with sealing turned off).
STORAGE_KEY: web.AppKey[StorageKey | None] = web.AppKey("storage_key")
#: Shared storage (server/storage/objects.py) and this node's recordings directory: a recording made on
#: another node is fetched from the store into the directory before it is served.
OBJECTS: web.AppKey[ObjectStore] = web.AppKey("recording_objects")
RECORDINGS_DIR: web.AppKey[Path] = web.AppKey("recordings_dir")

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
    if row["technician_user"] != api.principal(request).username:
        api.require_also(request, Right.VIEW_RECORDINGS)
    stored = row["recording_path"]
    if not stored:
        raise ApiError(404, "no_recording", "this session was not recorded")
    path = Path(stored)
    if path.name != f"{session_id}.hlrec":
        log.warning("recording path does not match its session; refusing it",
                    extra={"session_id": session_id, "path": stored})
        raise ApiError(404, "no_recording", "this session's recording is not available")
    if not await asyncio.to_thread(path.is_file):
        path = await _from_store(request, session_id)
    return row, path


async def _from_store(request: web.Request, session_id: str) -> Path:
    """The recording in this node's directory, fetched (with its .json and .cast) from the shared store when
    another node recorded it; 404 when the store does not have it either."""
    local = request.app[RECORDINGS_DIR] / f"{session_id}.hlrec"
    store = request.app[OBJECTS]
    stream, cast, meta = recording_names(session_id)
    if not await ensure_local(store, stream, local):
        raise ApiError(404, "no_recording", "the recording file is gone")
    for name, path in ((meta, local.with_suffix(".json")), (cast, local.with_suffix(".cast"))):
        await ensure_local(store, name, path)
    return local


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
    size = await asyncio.to_thread(plaintext_size, path, request.app[STORAGE_KEY])
    return api.json(views.recording_view(row, size=size, meta=meta, record_format=RECORD_FORMAT))


async def recording_data(request: web.Request) -> web.StreamResponse:
    """Recording stream (.hlrec)"""
    row, path = await _recording(request)
    key = request.app[STORAGE_KEY]
    size = await asyncio.to_thread(plaintext_size, path, key)
    await audit.append(api.db(request), api.principal(request).username, "session.recording.view", row["device_id"],
                       {"session_id": row["id"], "bytes": size})
    return await send_file(request, path, key, {"Content-Type": "application/octet-stream",
                                                "Content-Disposition": f'attachment; filename="{row["id"]}.hlrec"'})


async def shell_recording(request: web.Request) -> web.StreamResponse:
    """Shell recording (asciicast v2)"""
    row, path = await _recording(request)
    cast = path.with_suffix(".cast")  # written beside the screen recording by server.sessions.shell_relay
    if not await asyncio.to_thread(cast.is_file):
        raise ApiError(404, "no_recording", "no shell ran in this session")
    key = request.app[STORAGE_KEY]
    size = await asyncio.to_thread(plaintext_size, cast, key)
    await audit.append(api.db(request), api.principal(request).username, "session.shell_recording.view",
                       row["device_id"], {"session_id": row["id"], "bytes": size})
    return await send_file(request, cast, key, {"Content-Type": "application/x-asciicast",
                                                "Content-Disposition": f'attachment; filename="{row["id"]}.cast"'})


_ERRORS = {404: "No such session, or no recording (`no_recording`)",
           403: "Lacks view_recordings, and is not the session's technician"}
#: The session's technician (with remote_view) or an auditor (view_recordings).
_ACCESS = api.AnyOf(Right.VIEW_RECORDINGS, Right.REMOTE_VIEW)
_WHO = ("Readable by the session's own technician (with remote_view on the group) and by holders of "
        "view_recordings on the group; remote_view alone does not reach other technicians' recordings.")

ROUTES: list[api.Route] = [
    api.Route("GET", "/api/v1/sessions/{session_id}/recording", recording_info, _ACCESS, scopes.SESSION,
              response="RecordingInfo", errors=_ERRORS, description=_WHO),
    api.Route("GET", "/api/v1/sessions/{session_id}/recording/data", recording_data, _ACCESS,
              scopes.SESSION, errors=_ERRORS,
              description=f"{_WHO} Records `>dBBI` + payload (see server/sessions/relay.py); the technician's "
                          "side holds pointer events and key up/down without the key, never typed text. Audited "
                          "`session.recording.view`.",
              content={"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}),
    api.Route("GET", "/api/v1/sessions/{session_id}/shell-recording", shell_recording, _ACCESS, scopes.SESSION,
              errors=_ERRORS,
              description=f"{_WHO} The remote shell's output as asciicast v2 (a JSON header line, then "
                          "`[seconds, \"o\", text]` and `[seconds, \"r\", \"COLSxROWS\"]` lines): what the terminal "
                          "showed, never the technician's keystrokes. Audited `session.shell_recording.view`.",
              content={"application/x-asciicast": {"schema": {"type": "string"}}}),
]


def setup(server: HelplineServer) -> None:
    server.console_app[STORAGE_KEY] = storage_key_of(server.config)
    server.console_app[OBJECTS] = from_config(server.config)
    server.console_app[RECORDINGS_DIR] = SessionSettings.from_config(server.config).recordings_dir
    api.add_routes(server.console_app, ROUTES)
    key = sealing_key_of(server.config)
    if key is not None:
        server.console_app.on_startup.append(legacy_sealer(server.console_app[RECORDINGS_DIR], (".hlrec", ".cast"),
                                                           key, "recordings"))
