"""Registry of live console websockets, so logout/disable/revocation can close them at once.

Every console websocket handler wraps its lifetime in :func:`track`::

    ws = web.WebSocketResponse(); await ws.prepare(request)
    async with live.track(request, ws):
        async for msg in ws: ...

When the user is disabled, logs out, or a session is revoked (here or from the CLI in
another process, through the event table), the matching sockets are closed with 4401.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ..api.context import principal

log = logging.getLogger(__name__)

#: Close code sent when the account or session behind a websocket ends.
CLOSE_AUTH_ENDED = 4401


class LiveSockets:
    def __init__(self) -> None:
        self._by_session: dict[str, set[web.WebSocketResponse]] = {}
        self._by_user: dict[str, set[web.WebSocketResponse]] = {}

    def add(self, user_id: str, session_id: str | None, ws: web.WebSocketResponse) -> None:
        self._by_user.setdefault(user_id, set()).add(ws)
        if session_id:
            self._by_session.setdefault(session_id, set()).add(ws)

    def remove(self, user_id: str, session_id: str | None, ws: web.WebSocketResponse) -> None:
        for table, key in ((self._by_user, user_id), (self._by_session, session_id)):
            if key and key in table:
                table[key].discard(ws)
                if not table[key]:
                    del table[key]

    def count(self, *, user_id: str | None = None, session_id: str | None = None) -> int:
        if user_id is not None:
            return len(self._by_user.get(user_id, ()))
        return len(self._by_session.get(session_id or "", ()))

    async def close_user(self, user_id: str, reason: str) -> int:
        return await self._close(set(self._by_user.get(user_id, ())), reason)

    async def close_session(self, session_id: str, reason: str) -> int:
        return await self._close(set(self._by_session.get(session_id, ())), reason)

    async def _close(self, sockets: set[web.WebSocketResponse], reason: str) -> int:
        for ws in sockets:
            try:
                await ws.close(code=CLOSE_AUTH_ENDED, message=reason.encode()[:120])
            except (ConnectionError, RuntimeError) as exc:
                log.warning("could not close console websocket cleanly: %s", exc)
        return len(sockets)


LIVE: web.AppKey[LiveSockets] = web.AppKey("helpline_live_sockets", LiveSockets)


@contextlib.asynccontextmanager
async def track(request: web.Request, ws: web.WebSocketResponse) -> AsyncIterator[None]:
    """Register ``ws`` under the caller's user and session for the duration of the block."""
    caller = principal(request)
    registry = request.app.get(LIVE)
    if registry is None:  # accounts feature not installed (some unit tests)
        yield
        return
    registry.add(caller.user_id, caller.session_id, ws)
    try:
        yield
    finally:
        registry.remove(caller.user_id, caller.session_id, ws)
