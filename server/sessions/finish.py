"""The one way a session ends, whoever ends it and why.

The technician (API or closed stream), the device user (indicator), the agent (tunnel
closed, gone), the server (idle, grant or device revoked, an error) and the clock (no answer,
no tunnel) all end a session through :meth:`Finisher.finish`: end the machine, store the
end and the relay's traffic, audit ``session.ended``, tell the agent, close both websockets
and forget the live session. It acts once per session; later calls return False.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from protocol.session import SessionEnd
from server import audit
from server.connections import ConnectionRegistry
from server.store import Database

from . import repository
from .live import LiveSession, LiveTable

log = logging.getLogger(__name__)


class Finisher:
    def __init__(self, db: Callable[[], Database], connections: ConnectionRegistry, live: LiveTable,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._connections = connections
        self._live = live
        #: Called with the session id after its end is stored (ticket write-back); each must not raise.
        self.on_finished: list[Callable[[str], Awaitable[None]]] = []

    async def finish(self, session: LiveSession, reason: str, by: str, *, notify_agent: bool = True,
                     detail: str = "") -> bool:
        """End ``session`` (``by``: technician, user, agent or server); False if it already ended.

        ``notify_agent=False`` when the agent is the one who told us. When the machine already
        ended itself on a missed deadline, its own reason is the one stored.
        """
        if session.finished:
            return False
        session.finished = True
        now = self._clock()
        machine = session.machine
        machine.end(reason, by, now)
        relay = session.relay
        try:
            traffic = None if relay is None else repository.Traffic(
                relay.bytes_to_technician, relay.bytes_to_agent,
                str(relay.recording_path) if relay.recording_path else None)
            db = self._db()
            await repository.save_state(db, session, now, ended=True, traffic=traffic)
            details: dict[str, Any] = {"session_id": session.session_id, "reason": machine.end_reason,
                                       "by": machine.ended_by}
            if traffic is not None:
                details |= {"bytes_to_technician": traffic.bytes_to_technician,
                            "bytes_to_agent": traffic.bytes_to_agent}
            if detail:
                details["detail"] = detail
            await audit.append(db, _actor(session, machine.ended_by), "session.ended", session.device_id, details)
            if session.refused_inputs:
                await self.record_refusals(session.session_id, session.device_id, session.refused_inputs)
        finally:  # whatever the store said, the session's resources are released
            if notify_agent:
                await self._tell_agent(session, machine.end_reason, machine.ended_by)
            if relay is not None:
                await relay.close(machine.end_reason)
            session.notify()
            self._live.pop(session.session_id, None)
        for hook in self.on_finished:
            try:
                await hook(session.session_id)
            except Exception:
                log.exception("a session-end hook failed", extra={"session_id": session.session_id})
        return True

    async def record_refusals(self, session_id: str, device_id: str, count: int) -> None:
        """Store and audit the agent's count of refused inputs (view-only sessions)."""
        db = self._db()
        await repository.set_refused_inputs(db, session_id, count)
        await audit.append(db, f"device:{device_id}", "session.input_refused", device_id,
                           {"session_id": session_id, "count": count, "why": "view-only session"})

    async def _tell_agent(self, session: LiveSession, reason: str, by: str) -> None:
        conn = self._connections.get(session.device_id)
        if conn is None:
            return
        try:
            await conn.send(SessionEnd(session_id=session.session_id, reason=reason[:256],
                                       by="technician" if by == "technician" else "server"))
        except Exception:
            log.exception("could not tell the agent the session ended", extra={"session_id": session.session_id})


def _actor(session: LiveSession, by: str) -> str:
    if by == "technician":
        return f"user:{session.technician_user}"
    if by in ("user", "agent"):
        return f"device:{session.device_id}"
    return "server"
