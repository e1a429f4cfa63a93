"""Session REST API and the technician's stream websocket (console port), declared in :func:`routes`.

Every route needs REMOTE_VIEW on the group of the device (or of the session) it names, and
REMOTE_CONTROL as well for control mode (:func:`server.api.require_also`). A running session
belongs to its technician: only they (or an admin) may end it or change its mode, only they
may attach to its stream; its notes are written by its technician or an admin.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from aiohttp import web

from protocol import stream, toolkit
from protocol.authority import TechnicianProof
from protocol.session import Mode
from server import api, devices
from server.accounts import live as live_sockets
from server.agent_channel import SERVER_KEY
from server.api import context as api_context
from server.api import scopes
from server.api.route import Handler
from server.auth.rights import Right
from server.bus.node import forward_call, start_session
from server.errors import ApiError
from server.requests import sessions_link as request_link
from server.store import Row

from . import calls, chat, grants, notes, repository, tickets, views
from .calls import SessionHandOff, SessionInvite, SessionJoinRequest, SessionModeChange, SessionNotesText
from .driver import SessionDriver

__all__ = ["NewSession", "SessionHandOff", "SessionInvite", "SessionJoinRequest", "SessionModeChange",
           "SessionNotesText", "routes"]

#: Who could be invited into a session (kept under its old name for the tests that use it).
_candidates = calls.candidates_for

#: Largest technician → agent message: a toolkit file chunk (protocol.toolkit) or a stream text message.
TECHNICIAN_MAX_MESSAGE = max(stream.MAX_TEXT_BYTES, toolkit.CHUNK_HEADER_SIZE + toolkit.MAX_CHUNK)


class NewSession(msgspec.Struct):
    mode: Mode = "view"
    reason: Annotated[str, msgspec.Meta(max_length=256, description="Shown to the device user.")] = ""
    document_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,64}$", description=(
        "Unattended access under this approver-signed grant document: the device checks it, then asks the "
        "technician to sign its challenge (see `challenge` and `POST …/proof`)."))] | None = None
    request_id: Annotated[str, msgspec.Meta(pattern=r"^req-[0-9a-f]{1,32}$", description=(
        "Start it from this open support request of the device: the consent prompt names the request, and the "
        "request records the session (a waiting one is claimed)."))] | None = None


STREAM_DESCRIPTION = """\
**Websocket.** Send `GET` with `Upgrade: websocket`; the server answers `101 Switching Protocols`.
The `Origin` header must be the console's own origin (else 403 `bad_origin`, checked before anything else).
A viewer on another node's console instead adds `?ticket=` from that node's `POST …/stream-ticket` (no cookie,
no token): the `Origin` must be a known node's console and the one the ticket was minted for, checked first
(403 `bad_origin`; the ticket stays unspent), then the ticket is spent on this upgrade (403 `bad_ticket`).
Only the technician who requested the session may attach, once (409 `busy` if a viewer is attached,
410 `ended` if the session is over). REMOTE_CONTROL is needed as well when the session was requested in
control mode. The socket is closed at once when the caller's console session is revoked or the account
disabled.

A viewer that reads batched updates adds `?batched=1` (`&batched=1` after a ticket); without it a batch the agent sent
is passed on one rectangle a message. Messages are otherwise relayed to and from the device's agent unchanged (see
`protocol/stream.py`):
* server → client **binary**: screen rectangles and cursor shapes, a 21-byte big-endian header
  (magic 0xA1, kind, flags, monitor, x, y, w, h, encoding, sequence, length) then the payload; from agents that
  were offered `batched` one message carries several rectangles of one update back to back (each its header and
  payload; END_OF_FRAME on the last);
* server → client **text** (JSON with `type`): `cursor`, `monitors`, `stats`, `error`;
* client → server **text**: `ack {seq}` after drawing an update's END_OF_FRAME rectangle, `input.mouse`,
  `input.key`, `input.text` (refused and audited on view-only sessions), `monitor.select`, `quality`.
Either side closing ends the session."""


def _require_mode(request: web.Request, mode: str) -> None:
    if mode == "control":
        api.require_also(request, Right.REMOTE_CONTROL)


async def _row(request: web.Request, *, with_notes: bool = False) -> Row:
    """The session the path names (the scope found it; it may not outlive a concurrent delete)."""
    session_id = request.match_info["session_id"]
    db = api.db(request)
    row = await (repository.get_with_notes(db, session_id) if with_notes else repository.get(db, session_id))
    if row is None:
        raise ApiError.not_found("session")
    return row


def routes(sessions: SessionDriver) -> list[api.Route]:
    """The session routes, bound to this server's live sessions."""

    def act(name: str) -> Handler:
        """The route of one session call (:mod:`.calls`): run here, or on the node the session is live on."""
        action = calls.ACTIONS[name]

        async def handler(request: web.Request) -> web.Response:
            call = calls.Call(request.match_info["session_id"], api.principal(request), api.group(request),
                              api.db(request), request.get(api_context.BODY))
            bus = request.app[SERVER_KEY].bus
            if bus is not None and call.session_id not in sessions.live \
                    and await calls.may_be_elsewhere(call.db, call.session_id):
                forwarded = await forward_call(bus, name, call)
                if forwarded is not None:
                    return api.json(forwarded[1], status=forwarded[0])
            status, body = await action.run(sessions, call)
            return api.json(body, status=status)

        handler.__doc__ = action.run.__doc__  # the route's summary,
        handler.__name__ = handler.__qualname__ = action.run.__name__  # and its operation id, as before
        return handler

    async def create_session(request: web.Request) -> web.Response:
        """Request a remote session"""
        body = api.body(request, NewSession)
        _require_mode(request, body.mode)
        device = await devices.get(api.db(request), request.match_info["device_id"])
        if device is None:
            raise ApiError.not_found("device")
        if device["status"] == "revoked":
            raise ApiError(409, "device_revoked", "the device is revoked")
        caller, db = api.principal(request), api.db(request)
        reason, support = body.reason, None
        if body.request_id is not None:
            support = await request_link.usable(db, body.request_id, device["id"], caller)
            reason = request_link.offer_reason(support, body.reason)
        # Here when this node holds the device, else on the node that does (server/bus): the same path for a
        # session started from a support request (the Queue's Connect) as for any other.
        view = await start_session(request.app[SERVER_KEY].bus, sessions, caller, device_id=device["id"],
                                   group=device["group_name"], mode=body.mode, reason=reason,
                                   document_id=body.document_id)
        if support is not None:
            await request_link.started(db, support, view["session_id"], caller)
        return api.json(view, status=201)

    async def stream_ticket(request: web.Request) -> web.Response:
        """A single-use ticket to open the session's stream on the node it is live on"""
        session_id, caller = request.match_info["session_id"], api.principal(request)
        server = request.app[SERVER_KEY]
        where = await tickets.live_node(server, sessions, session_id)
        origin = tickets.page_origin(request, server)
        minted = await tickets.mint(api.db(request), session_id=session_id, caller=caller, node=where.node,
                                    origin=origin, login=await tickets.login_of(request, caller))
        url = tickets.stream_url(where.url, session_id, minted.ticket)
        return api.json({"session_id": session_id, "ticket": minted.ticket, "url": url, "node": where.node,
                         "node_url": where.url, "origin": origin, "expires_at": minted.expires_at},
                        status=201)

    async def list_device_grants(request: web.Request) -> web.Response:
        """Grants for unattended sessions on a device"""
        device = await devices.get(api.db(request), request.match_info["device_id"])
        if device is None:
            raise ApiError.not_found("device")
        listed = await grants.device_grants(api.db(request), device["id"], device["group_name"], time.time())
        return api.json({"device_id": device["id"], "grants": listed})

    async def list_device_sessions(request: web.Request) -> web.Response:
        """Sessions of a device"""
        rows = await repository.list_for_device(api.db(request), request.match_info["device_id"])
        return api.json({"sessions": [views.current_view(r, sessions.live.get(r["id"])) for r in rows]})

    async def get_chat(request: web.Request) -> web.Response:
        """The session's chat transcript"""
        row = await _row(request)
        lines = await chat.transcript(api.db(request), row["id"])
        return api.json({"session_id": row["id"], "chat": [dict(line) for line in lines]})

    async def put_notes(request: web.Request) -> web.Response:
        """Replace the session's notes"""
        text = api.body(request, SessionNotesText).text
        caller = api.principal(request)
        row = await _row(request)
        if row["technician_user"] != caller.username and not caller.is_admin:
            raise ApiError(403, "forbidden",
                           "only the technician who ran the session (or an admin) may write its notes")
        saved = await notes.save(api.db(request), row, caller.username, text)
        return api.json({"session_id": row["id"], "notes": saved})

    async def technician_stream(request: web.Request) -> web.StreamResponse:
        """Technician's stream (websocket)"""
        row = await _row(request)
        caller = api.principal(request).username
        live = sessions.live.get(row["id"])
        if live is None:
            _require_mode(request, row["requested_mode"])
            raise ApiError(410, "ended", f"the session has ended: {row['end_reason'] or row['state']}")
        if caller == live.people.controller:
            _require_mode(request, row["requested_mode"])
        if caller not in live.people.viewers:
            raise ApiError(403, "forbidden", "only technicians admitted to the session may watch it")
        relay = sessions.relay_for(live)
        if relay.attached("technician", caller) or relay.closed.is_set():
            raise ApiError(409, "busy", "you are already watching this session")
        ws = web.WebSocketResponse(compress=False, max_msg_size=TECHNICIAN_MAX_MESSAGE, autoping=True)
        await ws.prepare(request)
        # Registered with the accounts' live-socket registry: disabling the user or revoking their
        # console session closes this stream (and so the session) at once.
        async with live_sockets.track(request, ws):
            await relay.serve("technician", ws, caller, reads_batches=request.query.get("batched") == "1")
        return ws

    view = Right.REMOTE_VIEW
    device, session = scopes.DEVICE, scopes.SESSION
    return [
        api.Route("POST", "/api/v1/devices/{device_id}/sessions", create_session, view, device,
                  body=NewSession, response="LiveSession", status=201,
                  description="`remote_control` as well for mode `control`. The device user is asked to consent "
                              "unless an approver-signed grant document is given and the technician proves who they "
                              "are (`challenge`, `POST …/proof`).",
                  errors={403: "Lacks remote_view (remote_control for mode control) on the device's group",
                          409: "Device revoked or offline, or grant (document) unusable"}),
        api.Route("GET", "/api/v1/devices/{device_id}/grants", list_device_grants, view, device,
                  response="DeviceGrants",
                  description="Open grant documents that name the device or its group and have not expired, with "
                              "what the device last reported about each (`held_by_device`, `device_refused`). Only "
                              "a convenience for choosing one: the device verifies the grant and the technician's "
                              "proof itself."),
        api.Route("GET", "/api/v1/devices/{device_id}/sessions", list_device_sessions, view, device,
                  response="SessionList", description="Newest first, at most 200."),
        api.Route("GET", "/api/v1/sessions/{session_id}", act("get"), view, session, response="Session"),
        api.Route("POST", "/api/v1/sessions/{session_id}/end", act("end"), view, session, response="Session",
                  description="Only the session's technician or an admin while it runs. Answers the stored "
                              "session without its notes.",
                  errors={403: "Lacks remote_view, or not the caller's running session"}),
        api.Route("POST", "/api/v1/sessions/{session_id}/mode", act("mode"), view, session,
                  body=SessionModeChange, response="LiveSession", status=202,
                  description="`remote_control` as well to switch to control; only the controlling technician "
                              "(after a hand-off, the new one) or an admin. The device user must consent; answers "
                              "202 with the pending mode.",
                  errors={409: "Session ended or not streaming"}),
        api.Route("POST", "/api/v1/sessions/{session_id}/proof", act("proof"), view, session, body=TechnicianProof,
                  response="Session",
                  description="Only the session's technician, while the device's challenge is open (once). The "
                              "proof is relayed unchanged; the device verifies it against the grant's technicians. "
                              "Waits up to 10 s for the device's answer: a refusal shows in `end_reason`.",
                  errors={403: "Not the session's technician", 409: "No open challenge, already answered, expired, "
                                                                      "or the session ended"}),
        api.Route("GET", "/api/v1/sessions/{session_id}/chat", get_chat, view, session, response="SessionChat",
                  description="The chat between technician and device user as the device showed it (text, never "
                              "HTML), in order; at most 2000 lines."),
        api.Route("PUT", "/api/v1/sessions/{session_id}/notes", put_notes, view, session,
                  body=SessionNotesText, response="SessionNotes",
                  description="Only the session's technician or an admin, while it runs or after. Audited "
                              "`session.notes.update` (length and SHA-256, not the text)."),
        api.Route("GET", "/api/v1/sessions/{session_id}/people", act("people"), view, session, response="SessionPeople",
                  description="Who watches, who controls, who is invited, asks or is being asked on the device; "
                              "`candidates` (technicians of this server with remote_view on the group) only for "
                              "the controlling technician.", errors={409: "The session has ended"}),
        api.Route("POST", "/api/v1/sessions/{session_id}/invite", act("invite"), view, session, body=SessionInvite,
                  response="SessionPeople",
                  description="Only the controlling technician. A technician who already asked is put to the "
                              "device at once; otherwise the invitee joins with `POST …/join`. Audited.",
                  errors={409: "Not the controller, already in, account without remote_view, or ended"}),
        api.Route("POST", "/api/v1/sessions/{session_id}/join", act("join"), view, session, body=SessionJoinRequest,
                  response="SessionPeople",
                  description="View only. Uninvited: 202, the controlling technician sees the request and may "
                              "invite. Invited: the device is asked (a new consent question naming the joiner, "
                              "unless the user allowed colleagues at the first prompt) and the answer waits for "
                              "it: 200 admitted (then open the stream), 403 refused. Audited.",
                  errors={403: "The device refused (the user said No, no answer, unattended session)",
                          409: "Already in or being asked, or the session is not streaming"}),
        api.Route("POST", "/api/v1/sessions/{session_id}/hand", act("hand"), view, session, body=SessionHandOff,
                  response="SessionPeople",
                  description="Only the controlling technician, to a technician in the session who holds "
                              "remote_control on the group. The device applies it first; from then on only the "
                              "new controller's input passes (server and agent). Audited.",
                  errors={403: "The target lacks remote_control", 409: "Not the controller, not in, or the device "
                                                                       "did not apply it"}),
        api.Route("POST", "/api/v1/sessions/{session_id}/leave", act("leave"), view, session, response="SessionPeople",
                  description="Any technician in the session. The last one out ends it; a controller leaving "
                              "without handing over ends control (the others watch on). Audited."),
        api.Route("POST", "/api/v1/sessions/{session_id}/stream-ticket", stream_ticket, view, session,
                  response=dict[str, Any], status=201,
                  description="For a viewer on another node's console: a ticket (single use, valid "
                              f"{tickets.TICKET_TTL_S:g} s, only its hash stored) bound to the session, the caller, "
                              "their login and the node the session is live on, which takes it on the websocket "
                              "upgrade (`url`: `wss://that-node/…/stream?ticket=…`) with the `Origin` of this node's "
                              "console (`origin`). Audited.",
                  errors={410: "The session is not live on any node"}),
        api.Route("GET", "/api/v1/sessions/{session_id}/stream", technician_stream, view, session,
                  websocket=True, description=STREAM_DESCRIPTION,
                  errors={409: "A viewer is already attached", 410: "The session has ended"}),
    ]

