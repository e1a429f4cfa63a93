"""The queue's live feed: one console websocket per open Queue page, fed on every committed event.

On connect the page gets a ``snapshot`` of the open requests of the groups it may see; after that an
``update`` with the request's current view for each committed request event (``removed`` when it was
escalated to a group the page cannot see) (heard through
:class:`~server.requests.events.RequestEvents`, i.e. within the 0.2 s event poll of the commit, on
whichever node the browser is connected to). A browser that does not read its socket is dropped
after :data:`SEND_TIMEOUT_S` rather than holding up the others. A page's groups are its user's rights when
it connected: when those rights change (on any node: the ``account.rights_changed`` event) the page's socket
is closed with :data:`CLOSE_RIGHTS_CHANGED`, and the page reconnects with the new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..store import Database
from . import repository as repo
from .events import RequestEvent
from .views import views_of

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 2.0
#: Close code of a queue socket whose user's rights changed (the page reconnects and gets the new groups).
CLOSE_RIGHTS_CHANGED = 4403
#: Updates kept for a page whose snapshot is still on its way.
MAX_HELD = 1000


@dataclass(eq=False)
class Watcher:
    ws: web.WebSocketResponse
    #: Groups whose requests this page may see (None = all).
    groups: set[str] | None
    #: Updates that arrived while the snapshot was being read and sent: they follow it, never precede it.
    held: list[dict[str, Any]] | None = field(default_factory=list)
    #: Whose page it is (its groups follow that user's rights).
    user_id: str = ""

    def sees(self, group: str) -> bool:
        return self.groups is None or group in self.groups


class QueueHub:
    def __init__(self) -> None:
        self._watchers: set[Watcher] = set()

    def __len__(self) -> int:
        return len(self._watchers)

    async def snapshot(self, db: Database, groups: set[str] | None) -> dict[str, Any]:
        rows = await repo.list_requests(db, states=[repo.WAITING, repo.CLAIMED],
                                        groups=None if groups is None else sorted(groups))
        return {"type": "snapshot", "requests": await views_of(db, rows)}

    async def close_user(self, user_id: str, _payload: Any = None) -> int:
        """The user's rights changed: close their pages' sockets (their groups were fixed at connect)."""
        mine = [w for w in self._watchers if w.user_id == user_id]
        for watcher in mine:
            self._watchers.discard(watcher)
            with contextlib.suppress(Exception):
                await watcher.ws.close(code=CLOSE_RIGHTS_CHANGED, message=b"rights changed")
        return len(mine)

    def attach(self, app: web.Application, watcher_of: Any) -> None:
        """Close pages on rights changes, heard through the server's event watcher once it runs."""
        from ..accounts.admin import RIGHTS_CHANGED

        async def on_startup(_app: web.Application) -> None:
            events = watcher_of()
            if events is not None:
                events.on(RIGHTS_CHANGED, self.close_user)

        app.on_startup.append(on_startup)

    async def serve(self, db: Database, ws: web.WebSocketResponse, groups: set[str] | None,
                    user_id: str = "") -> None:
        watcher = Watcher(ws, groups, user_id=user_id)
        self._watchers.add(watcher)  # before the snapshot: an event in between is sent, not lost
        try:
            await ws.send_json(await self.snapshot(db, groups))
            while watcher.held:
                await ws.send_json(watcher.held.pop(0))
            watcher.held = None
            async for _msg in ws:  # the page sends nothing we act on; reading keeps pings answered
                pass
        finally:
            self._watchers.discard(watcher)

    async def on_event(self, db: Database, event: RequestEvent) -> None:
        if not self._watchers:
            return
        row = await repo.get(db, event.request_id)
        if row is None:
            return
        group = str(row["group_name"])
        previous = str(event.detail.get("previous_group") or group)
        targets = [w for w in self._watchers if w.sees(group)]
        # Escalated to another group's queue: pages that only see the old group let it go.
        gone = [w for w in self._watchers if previous != group and w.sees(previous) and not w.sees(group)]
        sends = [self._send(w, {"type": "removed", "id": row["id"]}) for w in gone]
        if targets:
            (view,) = await views_of(db, [row])
            message = {"type": "update", "kind": event.kind, "actor": event.actor, "request": view}
            sends.extend(self._send(w, message) for w in targets)
        await asyncio.gather(*sends)

    async def _send(self, watcher: Watcher, message: dict[str, Any]) -> None:
        if watcher.held is not None:
            if len(watcher.held) < MAX_HELD:
                watcher.held.append(message)
            else:  # the snapshot is not being read: this page is stuck
                self._watchers.discard(watcher)
            return
        try:
            await asyncio.wait_for(watcher.ws.send_json(message), SEND_TIMEOUT_S)
        except (TimeoutError, ConnectionError, RuntimeError) as exc:
            log.info("queue page dropped", extra={"reason": type(exc).__name__})
            self._watchers.discard(watcher)
            with contextlib.suppress(Exception):
                await watcher.ws.close()
