"""The console's authenticators: the cookie session and the API token (``Authorization: Bearer``).

Both are tried by the enforcing middleware (:mod:`server.api.middleware`), in the order
:func:`server.accounts.setup` lists them. The cookie authenticator also hands the session's
CSRF token to the middleware (``api.context.CSRF``), which then requires it in ``X-CSRF-Token``
on every state-changing request; Bearer calls need none, since browsers never send them on
their own.

Neither writes to the database: the last use of a token or session goes to the app's
:class:`~.usage.UsageLedger`, flushed in the background (so reads work on a full disk).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from aiohttp import web

from ..api import context
from ..auth.rights import Principal
from ..store import Row
from . import sessions, tokens, users
from .usage import UsageLedger

if TYPE_CHECKING:
    from ..app import HelplineServer

SESSION_ROW_KEY: web.RequestKey[Row] = web.RequestKey("helpline_session_row", dict)
USAGE: web.AppKey[UsageLedger] = web.AppKey("helpline_auth_usage", UsageLedger)


def track_usage(server: HelplineServer) -> UsageLedger:
    """Give the console app its usage ledger and the background task that flushes it."""
    ledger = server.console_app[USAGE] = UsageLedger()
    server.background.append(lambda: ledger.run(lambda: server.db, server.config.auth_usage_flush_s))
    return ledger


async def cookie_authenticator(request: web.Request) -> Principal | None:
    token = request.cookies.get(sessions.COOKIE_NAME)
    if not token:
        return None
    db = context.db(request)
    row = await sessions.lookup(db, token, request.app[USAGE])
    if row is None:
        return None
    request[context.CSRF] = row["csrf_token"]
    request[SESSION_ROW_KEY] = row
    return await users.principal_for(db, row, row["session_id"])


async def bearer_authenticator(request: web.Request) -> Principal | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    db = context.db(request)
    row = await tokens.lookup(db, token.strip(), request.app[USAGE])
    if row is None:
        return None
    return dataclasses.replace(await users.principal_for(db, row, None), token_id=str(row["token_id"]))
