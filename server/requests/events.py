"""The subscribe point for whoever reacts to support requests (the live queue, tickets, surveys).

Every committed request event (:mod:`server.requests.repository` writes one row of
``support_request_events`` and publishes :data:`~server.requests.repository.REQUEST_CHANGED` in the
same transaction) reaches every node through its :class:`~server.events.EventWatcher` (polled every
0.2 s), and each node calls its subscribers once, in commit order. Subscribers run on the event
loop: keep them short (start a task for slow work); one that raises is logged and the others still run.

Usage from another feature's ``setup(server)``::

    server.request_events.subscribe(on_request_event)   # async def on_request_event(event: RequestEvent)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestEvent:
    """One committed change of a request: ``kind`` as in ``support_request_events.kind``."""

    request_id: str
    kind: str
    actor: str
    at: float
    detail: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[RequestEvent], Awaitable[None]]


class RequestEvents:
    """Fan-out of committed request events to in-process subscribers."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` after every committed request event; returns a function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    async def deliver(self, request_id: str, payload: dict[str, Any]) -> None:
        """The watcher's handler for ``request.changed`` rows."""
        event = RequestEvent(request_id=request_id, kind=str(payload.get("kind", "")),
                             actor=str(payload.get("actor", "")), at=float(payload.get("at", 0.0)),
                             detail=dict(payload.get("detail") or {}))
        for callback in list(self._subscribers):
            try:
                await callback(event)
            except Exception:
                log.exception("request event subscriber failed", extra={"request_id": request_id, "kind": event.kind})
