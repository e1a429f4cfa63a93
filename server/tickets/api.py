"""Ticket routes: connectors (admins), links and ticket creation (technicians), write-back status.

Connector configuration needs ``administer`` on every group; the API never returns a secret,
only ``secret: "set"``. Links are made by whoever may see the session (its technician or an
admin) or the request (``remote_view`` on its group). Every change is audited.
"""

from __future__ import annotations

import json
import ssl
import time
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp import web

from server import api, audit
from server.api import scopes
from server.auth.rights import Right
from server.errors import ApiError
from server.store import Database, Row

from . import repository
from .connectors import KEY_PATTERN, Kind, NewTicket, build
from .http import TicketError
from .outbox import Outbox, idempotency_key, spec_of
from .secrets_box import SecretBox, SecretsUnavailable


async def request_group(db: Database, request_id: str) -> str | None:
    if len(request_id) > 200:
        return None
    row = await db.fetchone("SELECT group_name FROM support_requests WHERE id = ?", (request_id,))
    return None if row is None else str(row["group_name"])


#: A created-ticket reservation older than this without its key is a node that died mid-create.
STALE_S = 300.0

REQUEST = api.Scope("support request", "request_id", request_group)

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")]
Url = Annotated[str, msgspec.Meta(max_length=500, pattern=r"^https://[^\s]+$",
                                  description="https only: the instance (ServiceNow, Jira) or the webhook endpoint.")]


class ConnectorIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    kind: Kind
    url: Url
    #: ServiceNow (basic auth) user name, Jira account e-mail.
    username: Annotated[str, msgspec.Meta(max_length=200)] = ""
    auth: Literal["basic", "oauth"] = "basic"
    project_key: Annotated[str, msgspec.Meta(pattern=r"^([A-Z][A-Z0-9_]{0,31})?$")] = ""
    issue_type: Annotated[str, msgspec.Meta(max_length=64)] = "Task"
    ca_pem: Annotated[str, msgspec.Meta(max_length=64 * 1024, description="PEM CA certificates to trust "
                                        "instead of the system's (a private CA).")] = ""
    #: Password, OAuth token, API token or HMAC key; omitted on update keeps the stored one.
    secret: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    enabled: bool = True


class LinkIn(msgspec.Struct, forbid_unknown_fields=True):
    connector_id: Annotated[str, msgspec.Meta(max_length=64)]
    key: Annotated[str, msgspec.Meta(pattern=KEY_PATTERN, description="INC0010023, HELP-12, …")]


class CreateIn(msgspec.Struct, forbid_unknown_fields=True):
    connector_id: Annotated[str, msgspec.Meta(max_length=64)]


class WritebackQuery(msgspec.Struct):
    state: Literal["pending", "sent", "failed", ""] = ""


def _check(body: ConnectorIn) -> dict[str, Any]:
    try:
        parts = urlsplit(body.url)
        parts.port  # noqa: B018  # raises on a port that is not a number in range
    except ValueError as exc:  # "Invalid IPv6 URL", a bad port: the caller's mistake, not ours
        raise ApiError.invalid("url: not a valid URL") from exc
    if not parts.hostname or parts.username or parts.password or parts.fragment:
        raise ApiError.invalid("url: an https URL with a host, no user name or password in it")
    if body.kind != "webhook" and (parts.query or parts.path not in ("", "/")):
        raise ApiError.invalid("url: the instance's base URL (https://example.service-now.com)")
    if body.kind == "jira" and (not body.username or not body.project_key):
        raise ApiError.invalid("jira needs username (the account's e-mail) and project_key")
    if body.kind == "servicenow" and body.auth == "basic" and not body.username:
        raise ApiError.invalid("servicenow with basic auth needs username")
    if body.ca_pem:
        try:
            ssl.create_default_context(cadata=body.ca_pem)
        except (ssl.SSLError, ValueError, TypeError) as exc:  # TypeError: PEM text must be ASCII
            raise ApiError.invalid("ca_pem: not PEM certificates") from exc
    return {"username": body.username, "auth": body.auth, "project_key": body.project_key,
            "issue_type": body.issue_type or "Task", "ca_pem": body.ca_pem}


def connector_view(row: Row, full: bool) -> dict[str, Any]:
    view: dict[str, Any] = {"id": row["id"], "name": row["name"], "kind": row["kind"], "enabled": bool(row["enabled"])}
    if full:
        settings = json.loads(row["settings"])
        view |= {"url": row["url"], **settings, "secret": "set" if row["secret"] is not None else "unset",
                 "created_at": row["created_at"], "created_by": row["created_by"], "updated_at": row["updated_at"],
                 "updated_by": row["updated_by"]}
    return view


def writeback_view(row: Row) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "link_id", "session_id", "state", "attempts", "last_error", "note_id",
                                "next_attempt_at", "sent_at", "failed_at", "created_at")} | {
        "in_doubt": bool(row["in_doubt"])}


async def tickets_view(db: Database, links: list[Row]) -> dict[str, Any]:
    writebacks = await repository.writebacks_for(db, [link["id"] for link in links])
    items = []
    for link in links:
        mine = [writeback_view(w) for w in writebacks if w["link_id"] == link["id"]]
        items.append({"id": link["id"], "connector_id": link["connector_id"], "connector": link["connector_name"],
                      "kind": link["connector_kind"], "key": link["ticket_key"], "url": link["ticket_url"],
                      "session_id": link["session_id"], "request_id": link["request_id"],
                      "created_ticket": bool(link["created_ticket"]), "created_at": link["created_at"],
                      "created_by": link["created_by"], "writebacks": mine})
    failed = [w for item in items for w in item["writebacks"] if w["state"] == "failed"]
    return {"tickets": items, "writeback_failed": bool(failed),
            "writeback_errors": [w["last_error"] for w in failed]}


async def of_request(db: Database, request_id: str) -> dict[str, Any]:
    """The request's tickets and write-back status (its detail in the console shows them)."""
    return await tickets_view(db, await repository.links_for(db, request_id=request_id))


def routes(box: SecretBox, outbox: Outbox) -> list[api.Route]:
    async def list_connectors(request: web.Request) -> web.Response:
        """Configured ticket connectors (settings for admins; id, name and kind for everyone else)"""
        full = api.principal(request).is_admin
        rows = await repository.connectors(api.db(request))
        return api.json({"connectors": [connector_view(r, full) for r in rows if full or r["enabled"]]})

    async def create_connector(request: web.Request) -> web.Response:
        """Add a connector (its secret is stored encrypted; audited)"""
        body = api.body(request, ConnectorIn)
        settings = _check(body)
        if body.secret is None:
            raise ApiError.invalid("secret is required for a new connector")
        caller = api.principal(request).username
        db = api.db(request)
        connector_id = repository.new_id("tc")
        row = {"id": connector_id, "name": body.name, "kind": body.kind, "url": body.url, "settings": settings,
               "secret": box.encrypt(body.secret, connector_id), "enabled": body.enabled, "at": time.time(),
               "by": caller}
        if any(r["name"] == body.name for r in await repository.connectors(db)):
            raise ApiError.conflict("exists", f"a connector named {body.name!r} exists")
        async with db.transaction() as tx:
            await repository.insert_connector(tx, row)
            await audit.append_in(tx, caller, "ticket.connector.create", connector_id,
                                  {"name": body.name, "kind": body.kind, "url": body.url, "enabled": body.enabled,
                                   **{k: v for k, v in settings.items() if k != "ca_pem"},
                                   "ca_pem": bool(body.ca_pem)})
        stored = await repository.connector(db, connector_id)
        assert stored is not None
        return api.json(connector_view(stored, True), status=201)

    async def update_connector(request: web.Request) -> web.Response:
        """Change a connector (omit ``secret`` to keep the stored one; audited, the secret never is)"""
        body = api.body(request, ConnectorIn)
        settings = _check(body)
        db, caller = api.db(request), api.principal(request).username
        connector_id = request.match_info["connector_id"]
        old = await repository.connector(db, connector_id)
        if old is None:
            raise ApiError.not_found("connector")
        if old["kind"] != body.kind:
            raise ApiError.invalid("a connector's kind cannot change; add another connector")
        secret = box.encrypt(body.secret, connector_id) if body.secret is not None else old["secret"]
        if any(r["name"] == body.name and r["id"] != connector_id for r in await repository.connectors(db)):
            raise ApiError.conflict("exists", f"a connector named {body.name!r} exists")
        async with db.transaction() as tx:
            await repository.update_connector(tx, {"id": connector_id, "name": body.name, "url": body.url,
                                                   "settings": settings, "secret": secret, "enabled": body.enabled,
                                                   "at": time.time(), "by": caller})
            await audit.append_in(tx, caller, "ticket.connector.update", connector_id,
                                  {"name": body.name, "url": body.url, "enabled": body.enabled,
                                   **{k: v for k, v in settings.items() if k != "ca_pem"},
                                   "ca_pem": bool(body.ca_pem), "secret_changed": body.secret is not None})
        stored = await repository.connector(db, connector_id)
        assert stored is not None
        return api.json(connector_view(stored, True))

    async def delete_connector(request: web.Request) -> web.Response:
        """Remove a connector no ticket is linked through (disable it otherwise)"""
        db, caller = api.db(request), api.principal(request).username
        connector_id = request.match_info["connector_id"]
        if await repository.connector(db, connector_id) is None:
            raise ApiError.not_found("connector")
        if await repository.links_of_connector(db, connector_id):
            raise ApiError.conflict("in_use", "tickets are linked through this connector; disable it instead")
        async with db.transaction() as tx:
            await repository.delete_connector(tx, connector_id)
            await audit.append_in(tx, caller, "ticket.connector.delete", connector_id, {})
        return api.json({"deleted": connector_id})

    async def _connector(db: Database, connector_id: str) -> Row:
        row = await repository.connector(db, connector_id)
        if row is None or not row["enabled"]:
            raise ApiError.invalid("no such enabled connector")
        return row

    async def _link(request: web.Request, *, session: Row | None, request_row: Row | None) -> web.Response:
        body = api.body(request, LinkIn)
        db, caller = api.db(request), api.principal(request).username
        conn_row = await _connector(db, body.connector_id)
        session_id = None if session is None else str(session["id"])
        request_id = None if request_row is None else str(request_row["id"])
        if await repository.find_link(db, conn_row["id"], body.key, session_id=session_id, request_id=request_id):
            raise ApiError.conflict("exists", "already linked to this ticket")
        key, remote_id, url = body.key, "", ""
        try:
            async with aiohttp.ClientSession() as http:
                ref = await build(spec_of(conn_row, box), http).find(body.key)
            key, remote_id, url = ref.key, ref.remote_id, ref.url
        except TicketError as exc:
            if exc.status == 404:
                raise ApiError.invalid(f"{conn_row['name']} has no ticket {body.key}") from exc
            # unreachable now: linked by its key, resolved at write-back
        except SecretsUnavailable as exc:
            raise ApiError(503, "secrets_unavailable", str(exc)) from exc
        group = str((session or request_row or {})["group_name"])
        link = {"id": repository.new_id("tl"), "connector_id": conn_row["id"], "ticket_key": key,
                "remote_id": remote_id, "ticket_url": url, "session_id": session_id, "request_id": request_id,
                "group_name": group, "created_ticket": False, "created_at": time.time(), "created_by": caller}
        target = str((session or request_row or {})["device_id"])
        async with db.transaction() as tx:
            await repository.insert_link(tx, link)
            await audit.append_in(tx, caller, "ticket.link", target,
                                  {"session_id": session_id, "request_id": request_id, "connector": conn_row["name"],
                                   "ticket": key})
        if session is not None and session["ended_at"] is not None:
            outbox.wake.set()  # an ended session linked afterwards: the sweep queues its write-back
        links = await repository.links_for(db, session_id=session_id) if session_id else \
            await repository.links_for(db, request_id=request_id)
        return api.json(await tickets_view(db, links), status=201)

    async def _session(request: web.Request) -> Row:
        row = await api.db(request).fetchone("SELECT * FROM sessions WHERE id = ?", (request.match_info["session_id"],))
        if row is None:
            raise ApiError.not_found("session")
        return row

    async def _request(request: web.Request) -> Row:
        row = await api.db(request).fetchone(
            "SELECT r.*, d.hostname FROM support_requests r LEFT JOIN devices d ON d.id = r.device_id WHERE r.id = ?",
            (request.match_info["request_id"],))
        if row is None:
            raise ApiError.not_found("support request")
        return row

    async def session_tickets(request: web.Request) -> web.Response:
        """Tickets linked to the session (and its request), with the write-back status of each"""
        session = await _session(request)
        db = api.db(request)
        links = await repository.links_for(db, session_id=session["id"])
        if session.get("request_id"):
            links += await repository.links_for(db, request_id=session["request_id"])
        view = await tickets_view(db, links)
        for item in view["tickets"]:
            item["writebacks"] = [w for w in item["writebacks"] if w["session_id"] == session["id"]]
        return api.json(view)

    async def link_session(request: web.Request) -> web.Response:
        """Link the session to a ticket (its technician or an admin); written back when it ends"""
        session = await _session(request)
        caller = api.principal(request)
        if session["technician_user"] != caller.username and not caller.is_admin:
            raise ApiError(403, "forbidden", "only the technician who ran the session (or an admin) may link it")
        return await _link(request, session=session, request_row=None)

    async def request_tickets(request: web.Request) -> web.Response:
        """Tickets linked to the request, with the write-back status of its sessions"""
        row = await _request(request)
        return api.json(await tickets_view(api.db(request), await repository.links_for(api.db(request),
                                                                                       request_id=row["id"])))

    async def link_request(request: web.Request) -> web.Response:
        """Link the request to an existing ticket; its sessions write back to it"""
        return await _link(request, session=None, request_row=await _request(request))

    async def create_ticket(request: web.Request) -> web.Response:
        """Open a ticket for the request in the connector's system and link it (once per connector)"""
        row = await _request(request)
        body = api.body(request, CreateIn)
        db, caller = api.db(request), api.principal(request).username
        conn_row = await _connector(db, body.connector_id)
        existing = await repository.created_link_for_request(db, conn_row["id"], row["id"])
        if existing is not None and not existing["ticket_key"] and existing["created_at"] < time.time() - STALE_S:
            await repository.drop_reservation(db, existing["id"])  # a node died mid-create; try again
        link = {"id": repository.new_id("tl"), "connector_id": conn_row["id"], "request_id": row["id"],
                "group_name": row["group_name"], "created_at": time.time(), "created_by": caller}
        # Reserved under the store's unique index before the remote call: a double click or a second node
        # gets the 409 here instead of opening a second incident.
        if not await repository.reserve_created_link(db, link):
            raise ApiError.conflict("exists", f"a ticket was already created in {conn_row['name']} for this request")
        ticket = NewTicket(summary=row["summary"], details=row["details"],
                           device=f"{row.get('hostname') or row['device_id']} ({row['device_id']})",
                           requester=row["requester"], urgency=row["urgency"], request_id=row["id"],
                           request_number=int(row["number"]),
                           idempotency_key=idempotency_key(row["id"], conn_row["id"]))
        try:
            async with aiohttp.ClientSession() as http:
                ref = await build(spec_of(conn_row, box), http).create(ticket)
        except TicketError as exc:
            await repository.drop_reservation(db, link["id"])
            await audit.append(db, caller, "ticket.create_failed", row["device_id"],
                               {"request_id": row["id"], "connector": conn_row["name"], "error": exc.message})
            raise ApiError(502, "ticket_system", exc.message) from exc
        except BaseException as exc:
            await repository.drop_reservation(db, link["id"])
            if isinstance(exc, SecretsUnavailable):
                raise ApiError(503, "secrets_unavailable", str(exc)) from exc
            raise
        async with db.transaction() as tx:
            await repository.complete_created_link(tx, link["id"], ref.key, ref.remote_id, ref.url)
            await audit.append_in(tx, caller, "ticket.create", row["device_id"],
                                  {"request_id": row["id"], "connector": conn_row["name"], "ticket": ref.key})
        return api.json(await tickets_view(db, await repository.links_for(db, request_id=row["id"])), status=201)

    async def list_writebacks(request: web.Request) -> web.Response:
        """Recent write-backs across all tickets (pending, sent, failed)"""
        state = api.query(request, WritebackQuery).state or None
        rows = await repository.recent_writebacks(api.db(request), state)
        return api.json({"writebacks": [writeback_view(r) | {
            "ticket": r["ticket_key"], "ticket_url": r["ticket_url"], "request_id": r["request_id"],
            "connector": r["connector_name"], "kind": r["connector_kind"]} for r in rows]})

    async def retry_writeback(request: web.Request) -> web.Response:
        """Send a failed write-back again (audited)"""
        db = api.db(request)
        try:
            row_id = int(request.match_info["writeback_id"])
        except ValueError as exc:
            raise ApiError.not_found("write-back") from exc
        if not await repository.retry_failed(db, row_id, time.time()):
            raise ApiError.conflict("not_failed", "no failed write-back with that id")
        await audit.append(db, api.principal(request).username, "ticket.writeback_retry", str(row_id), {})
        outbox.wake.set()
        row = await repository.writeback(db, row_id)
        assert row is not None
        return api.json(writeback_view(row))

    admin, view = Right.ADMINISTER, Right.REMOTE_VIEW
    conflict = {409: "A connector of that name exists, or tickets are linked through it"}
    return [
        api.Route("GET", "/api/v1/tickets/connectors", list_connectors, api.AUTHENTICATED, response=dict[str, Any]),
        api.Route("POST", "/api/v1/tickets/connectors", create_connector, admin, api.GLOBAL, body=ConnectorIn,
                  response=dict[str, Any], status=201, errors=conflict),
        api.Route("PUT", "/api/v1/tickets/connectors/{connector_id}", update_connector, admin, api.GLOBAL,
                  body=ConnectorIn, response=dict[str, Any], errors=conflict),
        api.Route("DELETE", "/api/v1/tickets/connectors/{connector_id}", delete_connector, admin, api.GLOBAL,
                  response=dict[str, Any], errors=conflict),
        api.Route("GET", "/api/v1/tickets/writebacks", list_writebacks, admin, api.GLOBAL, query=WritebackQuery,
                  response=dict[str, Any]),
        api.Route("POST", "/api/v1/tickets/writebacks/{writeback_id}/retry", retry_writeback, admin, api.GLOBAL,
                  response=dict[str, Any], errors={409: "The write-back has not failed"}),
        api.Route("GET", "/api/v1/sessions/{session_id}/tickets", session_tickets, view, scopes.SESSION,
                  response=dict[str, Any]),
        api.Route("POST", "/api/v1/sessions/{session_id}/tickets", link_session, view, scopes.SESSION, body=LinkIn,
                  response=dict[str, Any], status=201, errors={409: "Already linked"}),
        api.Route("GET", "/api/v1/requests/{request_id}/tickets", request_tickets, view, REQUEST,
                  response=dict[str, Any]),
        api.Route("POST", "/api/v1/requests/{request_id}/tickets", link_request, view, REQUEST, body=LinkIn,
                  response=dict[str, Any], status=201, errors={409: "Already linked"}),
        api.Route("POST", "/api/v1/requests/{request_id}/tickets/new", create_ticket, view, REQUEST, body=CreateIn,
                  response=dict[str, Any], status=201,
                  errors={409: "A ticket was already created there", 502: "The ticket system refused or failed"}),
    ]
