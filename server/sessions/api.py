"""Session REST API and the technician's stream websocket (console port).

* ``POST /api/v1/devices/{device_id}/sessions`` ``{mode, reason, grant_id?}`` → 201 session
* ``GET  /api/v1/devices/{device_id}/sessions`` → ``{"sessions": [...]}``
* ``GET  /api/v1/sessions/{session_id}`` → session
* ``POST /api/v1/sessions/{session_id}/end`` → session (ended)
* ``POST /api/v1/sessions/{session_id}/mode`` ``{mode}`` → 202 (the device user must consent)
* ``PUT  /api/v1/sessions/{session_id}/notes`` ``{text}`` → ``{"session_id", "notes"}`` (the
  session's technician or an admin; at most 8000 characters; audited ``session.notes.update``)
* ``GET  /api/v1/sessions/{session_id}/stream`` → websocket (Origin checked), relayed to the agent

REMOTE_VIEW on the device's group is needed for everything, REMOTE_CONTROL as well for
control; only the technician who requested a session may attach to its stream. Sessions
carry ``notes`` (``{text, author, updated_at, revision}`` or null) in every listing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from protocol import stream
from protocol.session import EndReason

from .. import devices
from ..accounts import live as live_sockets
from ..agent_channel import SERVER_KEY
from ..auth.middleware import require
from ..auth.origin import check_origin
from ..auth.rights import Principal, Right
from ..http_util import json_error
from . import notes
from .manager import SESSIONS, LiveSession, SessionManager, SessionRefused, describe_row

if TYPE_CHECKING:
    from ..app import HelplineServer


def _manager(request: web.Request) -> SessionManager:
    server: HelplineServer = request.app[SERVER_KEY]
    return server.console_app[SESSIONS]


def _mode_rights(mode: str) -> Right:
    return Right.REMOTE_VIEW | Right.REMOTE_CONTROL if mode == "control" else Right.REMOTE_VIEW


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text='{"error":{"code":"invalid","message":"body must be JSON"}}',
                                 content_type="application/json") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error":{"code":"invalid","message":"body must be an object"}}',
                                 content_type="application/json")
    return body


async def create_session(request: web.Request) -> web.Response:
    manager = _manager(request)
    device = await devices.get(manager.db, request.match_info["device_id"])
    if device is None:
        return json_error(404, "not_found", "no such device")
    require(request, Right.REMOTE_VIEW, device["group_name"])
    body = await _body(request)
    mode, reason, grant_id = body.get("mode", "view"), body.get("reason", ""), body.get("grant_id")
    if mode not in ("view", "control"):
        return json_error(400, "invalid", "mode must be 'view' or 'control'")
    if not isinstance(reason, str) or len(reason) > 256:
        return json_error(400, "invalid", "reason must be a string of at most 256 characters")
    if grant_id is not None and not isinstance(grant_id, str):
        return json_error(400, "invalid", "grant_id must be a string")
    principal = require(request, _mode_rights(mode), device["group_name"])
    if device["status"] == "revoked":
        return json_error(409, "device_revoked", "the device is revoked")
    try:
        session = await manager.request(device_id=device["id"], group=device["group_name"],
                                        user=principal.username, user_id=principal.user_id, role=principal.role,
                                        mode=mode, reason=reason, grant_id=grant_id)
    except SessionRefused as exc:
        return json_error(exc.status, exc.code, exc.message)
    return web.json_response(session.describe(), status=201)


async def list_device_sessions(request: web.Request) -> web.Response:
    manager = _manager(request)
    device = await devices.get(manager.db, request.match_info["device_id"])
    if device is None:
        return json_error(404, "not_found", "no such device")
    require(request, Right.REMOTE_VIEW, device["group_name"])
    rows = await manager.db.fetchall(
        f"{notes.SELECT_WITH_NOTES} WHERE s.device_id = ? ORDER BY s.created_at DESC LIMIT 200", (device["id"],))
    return web.json_response({"sessions": [_current(manager, r) for r in rows]})


def _current(manager: SessionManager, row: dict[str, Any]) -> dict[str, Any]:
    live = manager.live.get(row["id"])
    described = describe_row(row) | {"notes": notes.describe(row)}
    if live is not None:
        described |= {k: v for k, v in live.describe().items() if k in ("state", "mode", "pending_mode")}
    return described


async def _session_with_rights(request: web.Request, right: Right = Right.REMOTE_VIEW
                               ) -> tuple[SessionManager, dict[str, Any], Principal]:
    manager = _manager(request)
    row = await manager.db.fetchone(f"{notes.SELECT_WITH_NOTES} WHERE s.id = ?", (request.match_info["session_id"],))
    if row is None:
        raise web.HTTPNotFound(text='{"error":{"code":"not_found","message":"no such session"}}',
                               content_type="application/json")
    principal = require(request, right, row["group_name"])
    return manager, row, principal


async def get_session(request: web.Request) -> web.Response:
    manager, row, _principal = await _session_with_rights(request)
    return web.json_response(_current(manager, row))


def _live_for(manager: SessionManager, row: dict[str, Any], principal: Principal) -> LiveSession | None:
    live = manager.live.get(row["id"])
    if live is not None and live.technician_user != principal.username and not principal.is_admin:
        raise web.HTTPForbidden(text='{"error":{"code":"forbidden","message":"not your session"}}',
                                content_type="application/json")
    return live


async def end_session(request: web.Request) -> web.Response:
    manager, row, principal = await _session_with_rights(request)
    live = _live_for(manager, row, principal)
    if live is not None:
        await manager.end(live, EndReason.TECHNICIAN.value, "technician")
    fresh = await manager.db.fetchone("SELECT * FROM sessions WHERE id = ?", (row["id"],))
    assert fresh is not None
    return web.json_response(describe_row(fresh))


async def change_mode(request: web.Request) -> web.Response:
    manager, row, principal = await _session_with_rights(request)
    body = await _body(request)
    mode = body.get("mode")
    if mode not in ("view", "control"):
        return json_error(400, "invalid", "mode must be 'view' or 'control'")
    require(request, _mode_rights(mode), row["group_name"])
    live = _live_for(manager, row, principal)
    if live is None:
        return json_error(409, "not_live", "the session has ended")
    try:
        await manager.request_mode(live, mode, principal.username)
    except SessionRefused as exc:
        return json_error(exc.status, exc.code, exc.message)
    return web.json_response(live.describe(), status=202)


async def put_notes(request: web.Request) -> web.Response:
    """PUT: replace the session's notes (its technician or an admin; while it runs or after)."""
    manager, row, principal = await _session_with_rights(request)
    if row["technician_user"] != principal.username and not principal.is_admin:
        return json_error(403, "forbidden", "only the technician who ran the session (or an admin) may write its notes")
    body = await _body(request)
    text = body.get("text")
    problem = notes.invalid_notes(text)
    if problem is not None:
        return json_error(400, "invalid", problem)
    assert isinstance(text, str)
    saved = await notes.save(manager.db, row, principal.username, text)
    return web.json_response({"session_id": row["id"], "notes": saved})


async def technician_stream(request: web.Request) -> web.StreamResponse:
    check_origin(request)
    manager, row, principal = await _session_with_rights(request)
    require(request, _mode_rights(row["requested_mode"]), row["group_name"])
    live = manager.live.get(row["id"])
    if live is None:
        return json_error(410, "ended", f"the session has ended: {row['end_reason'] or row['state']}")
    if live.technician_user != principal.username:
        return json_error(403, "forbidden", "only the technician who requested the session may watch it")
    relay = manager.relay_for(live)
    if relay.attached("technician") or relay.closed.is_set():
        return json_error(409, "busy", "a viewer is already attached to this session")
    ws = web.WebSocketResponse(compress=False, max_msg_size=stream.MAX_TEXT_BYTES, autoping=True)
    await ws.prepare(request)
    # Registered with the accounts' live-socket registry: disabling the user or revoking their
    # console session closes this stream (and so the session) at once.
    async with live_sockets.track(request, ws):
        await relay.serve("technician", ws)
    return ws


def setup(server: HelplineServer) -> None:
    router = server.console_app.router
    router.add_post("/api/v1/devices/{device_id}/sessions", create_session)
    router.add_get("/api/v1/devices/{device_id}/sessions", list_device_sessions)
    router.add_get("/api/v1/sessions/{session_id}", get_session)
    router.add_post("/api/v1/sessions/{session_id}/end", end_session)
    router.add_post("/api/v1/sessions/{session_id}/mode", change_mode)
    router.add_put("/api/v1/sessions/{session_id}/notes", put_notes)
    router.add_get("/api/v1/sessions/{session_id}/stream", technician_stream)
