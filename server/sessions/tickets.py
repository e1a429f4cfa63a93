"""Stream tickets: a viewer signed in on node A opens a session's stream on node C, where it is live.

Why: the tunnel's two ends meet on the device's node C (A stays off the data path), but the browser's
cookie belongs to A's host and must not be shared with other hosts. So A mints a **ticket** for the
signed-in caller — random, single use, valid :data:`TICKET_TTL_S`, only its SHA-256 stored in the shared
database — bound to the session, the technician, the login it was minted under (their cookie session's id or
their API token's id, ``t_…``: a ticket is refused once that login is revoked, and the stream it opened is
closed then, as any console websocket), the node that may take it and the origin of A's console (the
page's checked ``Origin``, else A's configured console URL). The viewer opens ``wss://C/…/stream?ticket=…``;
C's :func:`authenticator` first requires the ``Origin`` to be a known node's console (this node's own
origins, ``allowed_origins``, or a node registered in the ``nodes`` table: server/bus/nodes.py) and the
one the ticket was minted for — a wrong one leaves the ticket unspent — then spends the ticket (one
``UPDATE … WHERE used_at IS NULL``: a replay, or two racing uses, find it spent) and re-reads the
technician's rights from the database.
The stream route's own checks (right on the session's group, admitted viewer) follow as for a cookie.

Every ticket minted, taken or refused is audited (refusals through the audit throttle, per peer).
Tickets are never logged: the listeners keep no access log and errors log the path, not the query.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from common.hashing import hash_secret
from common.origins import STREAM_PATH, origin_of
from server import audit
from server.accounts import sessions as console_sessions
from server.accounts import users
from server.api import context as api_context
from server.auth.rights import Principal
from server.bus.connection import node_name
from server.errors import ApiError
from server.store import Database, Row

from .driver import SessionDriver

if TYPE_CHECKING:
    from server.app import HelplineServer

#: How long a minted ticket may be taken (a browser opens its websocket at once).
TICKET_TTL_S = 30.0
#: Spent and expired tickets are deleted this long after they expired (a few minutes' evidence in the table).
KEEP_S = 600.0
TICKET_PARAM = "ticket"
#: secrets.token_urlsafe(32) is 43 characters.
MAX_TICKET = 64
#: API token ids start so (server/accounts/tokens.py); cookie session ids start ``s_``.
TOKEN_LOGIN = "t_"  # noqa: S105 - an id prefix, not a secret
Origins = Callable[[web.Request], set[str]]
#: The ticket's Origin, once checked: the stream's Origin check lets exactly it through.
TICKET_ORIGIN: web.RequestKey[str] = web.RequestKey("helpline_ticket_origin", str)


@dataclass(frozen=True)
class Minted:
    ticket: str
    expires_at: float


@dataclass(frozen=True)
class LiveNode:
    """Where a session is live: the node's id on the bus and its console URL."""

    node: str
    url: str


def digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def stream_url(node_url: str, session_id: str, ticket: str) -> str:
    parts = urlsplit(node_url)
    return f"wss://{parts.netloc}/api/v1/sessions/{session_id}/stream?{TICKET_PARAM}={ticket}"


def page_origin(request: web.Request, server: HelplineServer) -> str:
    """The origin of the console page asking for a ticket: its ``Origin`` when that is one of this console's
    own (configured URL, ``allowed_origins``), else this node's configured console URL. Never the ``Host``
    header: behind a proxy or an alias it is not what the page's origin is."""
    configured = origin_of(server.config.node_url or server.console_url)
    sent = request.headers.get("Origin", "")
    own = {configured} | {origin_of(o) for o in request.app[api_context.ORIGINS](request)}
    return sent if sent in own else configured


async def live_node(server: HelplineServer, sessions: SessionDriver, session_id: str) -> LiveNode:
    """This node when the session is live here, else the node that answers for it on the bus (410 if none)."""
    if session_id in sessions.live:
        return LiveNode(node_name(server.config), server.config.node_url or server.console_url)
    if server.bus is not None:
        holder = await server.bus.router.live_holder(session_id)
        if holder is not None:
            return LiveNode(holder.node, holder.url)
    raise ApiError(410, "ended", "the session is not live on any node")


async def login_of(request: web.Request, caller: Principal) -> str:
    """The caller's login: their cookie session's id, else the id of the API token they called with."""
    if caller.session_id:
        return caller.session_id
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        row = await api_context.db(request).fetchone("SELECT id FROM api_tokens WHERE token_hash = ?",
                                                     (hash_secret(token.strip()),))
        if row is not None:
            return str(row["id"])
    raise ApiError(403, "forbidden", "a stream ticket needs a console session or an API token")


async def mint(db: Database, *, session_id: str, caller: Principal, node: str, origin: str,
               login: str | None = None, now: float | None = None) -> Minted:
    """A new ticket for ``caller`` under ``login`` (default: their cookie session; see :func:`login_of`),
    its hash stored, audited; spent ones past :data:`KEEP_S` are dropped."""
    now = time.time() if now is None else now
    ticket = secrets.token_urlsafe(32)
    login = login or caller.session_id or ""
    async with db.transaction() as tx:
        await tx.execute("DELETE FROM stream_tickets WHERE expires_at < ?", (now - KEEP_S,))
        await tx.execute(
            "INSERT INTO stream_tickets (token_hash, session_id, user_id, login_id, node, origin, created_at,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (digest(ticket), session_id, caller.user_id, login or None, node, origin, now, now + TICKET_TTL_S))
        await audit.append_in(tx, f"user:{caller.username}", "session.stream_ticket", session_id,
                              {"node": node, "origin": origin})
    return Minted(ticket, now + TICKET_TTL_S)


class _Refused(Exception):
    """Why a ticket was not taken (the reason is audited; the caller sees one 403)."""


async def _spend(db: Database, ticket: str, origin: str, now: float) -> Row:
    """The ticket's row, spent by this call (refused: unknown, for another origin — left unspent then, so
    a cross-site page cannot burn the viewer's ticket —, or spent before)."""
    async with db.transaction() as tx:
        row = await tx.fetchone("SELECT * FROM stream_tickets WHERE token_hash = ?", (digest(ticket),))
        if row is None:
            raise _Refused("unknown")
        if row["origin"] != origin:
            raise _Refused("origin")
        if await tx.execute("UPDATE stream_tickets SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
                            (now, row["token_hash"])) != 1:
            raise _Refused("replayed")
    return row


async def _login_live(db: Database, login_id: str | None, now: float) -> bool:
    """The login the ticket was minted under is live: an API token not revoked or expired, a cookie
    session not revoked or past its absolute limit (none recorded: refused)."""
    if not login_id:
        return False
    if login_id.startswith(TOKEN_LOGIN):
        token = await db.fetchone("SELECT expires_at, revoked_at FROM api_tokens WHERE id = ?", (login_id,))
        return token is not None and token["revoked_at"] is None and \
            (token["expires_at"] is None or token["expires_at"] > now)
    row = await db.fetchone("SELECT created_at, revoked_at FROM console_sessions WHERE id = ?", (login_id,))
    return row is not None and row["revoked_at"] is None and now - row["created_at"] < console_sessions.ABSOLUTE_S


def authenticator(server: HelplineServer, console_origins: Origins) -> api_context.Authenticator:
    """The console's first authenticator: a ``?ticket=`` on a session stream upgrade (ignored on other paths)."""

    async def known_origin(request: web.Request, origin: str) -> bool:
        if origin == f"https://{request.host}" or origin in {origin_of(o) for o in console_origins(request)}:
            return True
        return server.bus is not None and await server.bus.nodes.knows(origin)

    async def authenticate(request: web.Request) -> Principal | None:
        ticket = request.query.get(TICKET_PARAM)
        path = STREAM_PATH.match(request.path)
        if ticket is None or path is None:  # only a session stream takes a ticket; elsewhere it means nothing
            return None
        origin = request.headers.get("Origin", "")
        db, now = api_context.db(request), time.time()
        try:
            if request.method != "GET" or len(ticket) > MAX_TICKET:
                raise _Refused("not a stream upgrade")
            if not await known_origin(request, origin):  # before the ticket is touched: it stays usable
                raise _Refused("origin")
            row = await _spend(db, ticket, origin, now)
            if row["expires_at"] <= now:
                raise _Refused("expired")
            if row["session_id"] != path.group(1) or row["node"] != node_name(server.config):
                raise _Refused("another session or node")
            user = await users.get_row(db, user_id=row["user_id"])
            if user is None or user["disabled"] or not await _login_live(db, row["login_id"], now):
                raise _Refused("login ended")
        except _Refused as refused:
            peer = request.remote or ""
            await server.audit_throttle.append(db, f"peer:{peer}", "session.stream_ticket.refused",
                                               path.group(1),
                                               {"reason": str(refused), "origin": origin[:200]}, peer=peer)
            if str(refused) == "origin":
                raise ApiError(403, "bad_origin", "this ticket is not for a page of that origin") from None
            raise ApiError(403, "bad_ticket", f"stream ticket refused: {refused}") from None
        request[TICKET_ORIGIN] = origin
        await audit.append(db, f"user:{user['username']}", "session.stream_ticket.taken", row["session_id"],
                           {"node": row["node"], "origin": origin})
        login = row["login_id"]
        if login.startswith(TOKEN_LOGIN):  # registered under the token's id: revoking it closes the stream
            return dataclasses.replace(await users.principal_for(db, user, None), session_id=login)
        return await users.principal_for(db, user, login)

    return authenticate


def install(server: HelplineServer) -> None:
    """Tickets are tried before cookies and tokens; a checked ticket's Origin may open the stream."""
    app = server.console_app
    others = app[api_context.ORIGINS]
    app[api_context.AUTHENTICATORS].insert(0, authenticator(server, others))

    def origins(request: web.Request) -> set[str]:
        taken = request.get(TICKET_ORIGIN)
        return others(request) | ({taken} if taken else set())

    app[api_context.ORIGINS] = origins
