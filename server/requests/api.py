"""REST API of support requests (console port), declared in :func:`routes`.

Reading the queue needs ``view_inventory`` on the request's device group; acting on a request
(claim, unclaim, resolve, reopen, notes, escalate) and seeing its screenshot need ``remote_view``
there — the technician's right; the screenshot is a picture of the user's screen, so it also needs
``remote_view`` on the device's own group (an escalated request's group may be another). Escalating
to another group needs ``view_inventory`` on that group. A caller with no
right on the group gets the same 404 as for a request that does not exist. Every change is audited
and written to the request's event log by :mod:`server.requests.repository`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from server import api
from server.accounts import live as live_sockets
from server.api.route import Handler, Scope
from server.auth.rights import Right
from server.errors import ApiError
from server.kpis import surveys
from server.store import Database
from server.tickets import api as tickets

from . import repository as repo
from .live import QueueHub
from .views import views_of

GroupName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
NoteText = Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]


async def request_group(db: Database, request_id: str) -> str | None:
    if len(request_id) > 64:
        return None
    row = await db.fetchone("SELECT group_name FROM support_requests WHERE id = ?", (request_id,))
    return None if row is None else str(row["group_name"])


REQUEST = Scope("support request", "request_id", request_group)


async def _device_group(db: Database, request_id: str) -> str | None:
    """The group of the device that opened the request (now, not when it was opened)."""
    row = await db.fetchone("SELECT d.group_name FROM support_requests r JOIN devices d ON d.id = r.device_id"
                            " WHERE r.id = ?", (request_id,))
    return None if row is None else str(row["group_name"])


class RequestQuery(msgspec.Struct, forbid_unknown_fields=True):
    state: Annotated[str, msgspec.Meta(pattern=r"^(open|waiting|claimed|resolved|withdrawn|all)$", description=(
        "`open` (default: waiting and claimed), one state, or `all`"))] = "open"
    group: GroupName | None = None
    resolved_since: Annotated[float, msgspec.Meta(ge=0, description=(
        "Only requests resolved at or after this time (epoch seconds), e.g. now − 7 days for the reopen list"
    ))] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 500
    offset: Annotated[int, msgspec.Meta(ge=0, le=1_000_000, description="Rows to skip (paging: `next_offset`)")] = 0


class Resolve(msgspec.Struct, forbid_unknown_fields=True):
    category: Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="e.g. printer, network, access")]
    notes: Annotated[str, msgspec.Meta(max_length=4000)] = ""


class Note(msgspec.Struct, forbid_unknown_fields=True):
    text: NoteText


class Escalate(msgspec.Struct, forbid_unknown_fields=True):
    group: GroupName | None = None
    notes: Annotated[str, msgspec.Meta(max_length=4000)] = ""


Action = Literal["claim", "unclaim", "reopen"]


def routes(hub: QueueHub) -> list[api.Route]:
    async def _view(db: Database, request_id: str) -> dict[str, Any]:
        row = await repo.get(db, request_id)
        if row is None:
            raise ApiError.not_found("request")
        (view,) = await views_of(db, [row])
        return view

    async def list_requests(request: web.Request) -> web.Response:
        """Support requests of the caller's groups"""
        q = api.query(request, RequestQuery)
        caller = api.principal(request)
        allowed = caller.groups_with(Right.VIEW_INVENTORY)
        groups: list[str] | None = None if allowed is None else sorted(allowed)
        if q.group is not None:
            groups = [q.group] if groups is None or q.group in groups else []
        states = {"open": [repo.WAITING, repo.CLAIMED], "all": None}.get(q.state, [q.state])
        rows = await repo.list_requests(api.db(request), states=states, groups=groups, limit=q.limit, offset=q.offset,
                                        newest_first=q.state not in ("open", repo.WAITING, repo.CLAIMED),
                                        resolved_since=q.resolved_since)
        page: dict[str, Any] = {"requests": await views_of(api.db(request), rows)}
        if len(rows) == q.limit:
            page["next_offset"] = q.offset + q.limit
        return api.json(page)

    async def get_request(request: web.Request) -> web.Response:
        """One support request, with its diagnostics, self-service attempt, event log, CSAT survey (score and
        comment) and, for who may act on it, its tickets with their write-back status"""
        db, request_id = api.db(request), request.match_info["request_id"]
        view = await _view(db, request_id)
        view.update(await repo.attachments(db, request_id))
        view["events"] = await repo.events_of(db, request_id)
        view["survey"] = await surveys.of_request(db, request_id)
        acting = api.principal(request).groups_with(Right.REMOTE_VIEW)
        if acting is None or view["group_name"] in acting:  # tickets are the technician's (remote_view), as there
            view["tickets"] = await tickets.of_request(db, request_id)
        return api.json(view)

    async def screenshot(request: web.Request) -> web.Response:
        """The screenshot the user sent"""
        db, request_id = api.db(request), request.match_info["request_id"]
        device_group = await _device_group(db, request_id)  # an escalated request's group is not the device's
        if device_group is None or not api.principal(request).can(Right.REMOTE_VIEW, device_group):
            raise ApiError.not_found("screenshot")
        data = await repo.screenshot(db, request_id)
        if data is None:
            raise ApiError.not_found("screenshot")
        return web.Response(body=data, content_type="image/png",
                            headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": "default-src 'none'"})

    def simple(action: Action) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            caller = api.principal(request)
            await repo.transition(api.db(request), request.match_info["request_id"], action,
                                  actor=caller.username, actor_name=caller.username)
            return api.json(await _view(api.db(request), request.match_info["request_id"]))
        handler.__name__ = handler.__qualname__ = f"{action}_request"  # the OpenAPI operation id
        handler.__doc__ = {"claim": "Claim a request (acknowledges it)", "unclaim": "Give a claimed request back",
                           "reopen": "Reopen a resolved request (within 7 days)"}[action]
        return handler

    async def resolve(request: web.Request) -> web.Response:
        """Resolve a request with a category and notes"""
        body, caller = api.body(request, Resolve), api.principal(request)
        await repo.transition(api.db(request), request.match_info["request_id"], "resolve", actor=caller.username,
                              category=body.category, notes=body.notes)
        return api.json(await _view(api.db(request), request.match_info["request_id"]))

    async def add_note(request: web.Request) -> web.Response:
        """Add a note (shown to the user at the device)"""
        body, caller = api.body(request, Note), api.principal(request)
        await repo.add_note(api.db(request), request.match_info["request_id"], actor=caller.username, text=body.text,
                            from_device=False)
        return api.json(await _view(api.db(request), request.match_info["request_id"]))

    async def escalate(request: web.Request) -> web.Response:
        """Escalate a request (optionally to another group's queue)"""
        body, caller = api.body(request, Escalate), api.principal(request)
        db = api.db(request)
        if body.group is not None and await db.fetchone("SELECT name FROM device_groups WHERE name = ?",
                                                        (body.group,)) is None:
            raise ApiError.invalid(f"no device group {body.group!r}")
        if body.group is not None and not caller.can(Right.VIEW_INVENTORY, body.group):
            raise ApiError(403, "forbidden", f"you have no right on group {body.group!r} to hand the request to")
        await repo.transition(db, request.match_info["request_id"], "escalate", actor=caller.username,
                              group=body.group or "", notes=body.notes)
        return api.json(await _view(db, request.match_info["request_id"]))

    async def live(request: web.Request) -> web.StreamResponse:
        """The queue, live"""
        caller = api.principal(request)
        ws = web.WebSocketResponse(compress=False, max_msg_size=4096, autoping=True, heartbeat=30)
        await ws.prepare(request)
        async with live_sockets.track(request, ws):
            await hub.serve(api.db(request), ws, caller.groups_with(Right.VIEW_INVENTORY), caller.user_id)
        return ws

    see, act = Right.VIEW_INVENTORY, Right.REMOTE_VIEW
    wrong_state = {409: "The request is not in a state this applies to (`wrong_state`), or reopened after 7 days "
                        "(`too_late`)"}
    base = "/api/v1/requests/{request_id}"
    return [
        api.Route("GET", "/api/v1/requests", list_requests, see, None, query=RequestQuery, response=dict[str, Any],
                  description="Open ones (waiting, claimed) oldest first, closed ones and `all` newest first; `limit` "
                              "(at most 500) from `offset`, `next_offset` when there may be more; only of groups "
                              "where the caller has `view_inventory`."),
        api.Route("GET", "/api/v1/requests/live", live, see, None, websocket=True,
                  description="**Websocket.** A `snapshot` of the open requests of the caller's groups, then an "
                              "`update` {kind, actor, request} for every committed change."),
        api.Route("GET", base, get_request, see, REQUEST, response=dict[str, Any]),
        api.Route("GET", base + "/screenshot", screenshot, act, REQUEST,
                  content={"image/png": {"schema": {"type": "string", "format": "binary"}}}),
        api.Route("POST", base + "/claim", simple("claim"), act, REQUEST, response=dict[str, Any],
                  errors=wrong_state),
        api.Route("POST", base + "/unclaim", simple("unclaim"), act, REQUEST, response=dict[str, Any],
                  errors=wrong_state),
        api.Route("POST", base + "/reopen", simple("reopen"), act, REQUEST, response=dict[str, Any],
                  errors=wrong_state),
        api.Route("POST", base + "/resolve", resolve, act, REQUEST, body=Resolve, response=dict[str, Any],
                  errors=wrong_state),
        api.Route("POST", base + "/notes", add_note, act, REQUEST, body=Note, response=dict[str, Any],
                  errors=wrong_state),
        api.Route("POST", base + "/escalate", escalate, act, REQUEST, body=Escalate, response=dict[str, Any],
                  errors={**wrong_state, 403: "No `view_inventory` on the group to escalate to (`forbidden`)"}),
    ]
