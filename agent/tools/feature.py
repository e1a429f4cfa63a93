"""Answers the server's tools requests (protocol/tools.py): processes and services, without the screen.

The device decides. Reading needs the local policy's ``allow_tools`` (default true). A change —
ending a process, starting/stopping/restarting a unit — also needs the authority of a control
session: ``session_id`` must name a session *running on this device* in control mode whose
technician is the one asking, consented by the user (attended), or under an approver-signed grant
that also names ``processes``/``services`` (unattended). The server cannot make that up: the
session list is the agent's own. Every change and journal read, allowed or refused, goes to the
device audit log (the server audits its side too).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from protocol.tools import (
    JournalRequest,
    ProcessEndRequest,
    ProcessListRequest,
    ServiceActionRequest,
    ServiceListRequest,
    ToolResult,
)

from .processes import EndRefused, ProcessTable, end_process
from .services import Services, Unavailable

if TYPE_CHECKING:
    from ..control_client import AgentClient
    from ..sessions import AgentSessions

log = logging.getLogger(__name__)

#: What an agent announces in hello when it answers tools requests.
CAPABILITY = "tools"


class ToolsFeature:
    """Processes and services for the server's requests; ``sessions`` is the device's own session record."""

    def __init__(self, client: AgentClient, sessions: AgentSessions, services: Services | None = None) -> None:
        self.client = client
        self.sessions = sessions
        self.table = ProcessTable()
        self.services = services if services is not None else Services()
        self._lock = asyncio.Lock()  # one listing at a time: the CPU counters are shared

    def _allowed(self) -> bool:
        return self.sessions.policy().allow_tools

    def authority(self, session_id: str | None, technician_user: str, action: str) -> str:
        """"" when a running control session of this technician allows ``action``, else why not."""
        if not session_id:
            return "changes need the technician's running control session on this device"
        running = self.sessions.running.get(session_id)
        if running is None or running.end_reason:
            return "that session is not running on this device"
        if running.controlling != technician_user:  # after a hand-off, the new controller; nobody once control ended
            return "that session is controlled by another technician"
        if running.mode != "control":
            return "that session was allowed to view only"
        if running.grant is not None and action not in running.grant.actions:
            return f"the session's grant does not name {action!r}"
        return ""

    def _audit(self, event: str, **details: Any) -> None:
        store = self.sessions.authority
        if store is not None:
            store.audit.record(event, **details)
        log.info(event, extra=details)

    def _refusal(self, session_id: str | None, technician_user: str, action: str) -> tuple[str, str] | None:
        """Why a change (ending a process, acting on a unit) may not happen here, or None."""
        if not self._allowed():
            return "policy", "the device's policy switches tools off"
        why = self.authority(session_id, technician_user, action)
        return ("no_authority", why) if why else None

    async def on_processes(self, client: AgentClient, request: ProcessListRequest) -> None:
        if not self._allowed():
            await client.send(_refused(request.id, "policy", "the device's policy switches tools off"))
            return
        async with self._lock:
            processes, truncated = await asyncio.to_thread(self.table.snapshot)
        await client.send(ToolResult(in_reply_to=request.id, processes=processes, truncated=truncated))

    async def on_end(self, client: AgentClient, request: ProcessEndRequest) -> None:
        refusal = self._refusal(request.session_id, request.technician_user, "processes")
        result: ToolResult
        if refusal is not None:
            result = _refused(request.id, *refusal)
        else:
            try:
                outcome = await asyncio.to_thread(end_process, request.pid, request.started_at, request.grace_s)
                result = ToolResult(in_reply_to=request.id, outcome=outcome)
            except EndRefused as exc:
                result = _refused(request.id, exc.code, str(exc))
        self._audit("tools.process.end", pid=request.pid, session_id=request.session_id,
                    technician=request.technician, technician_user=request.technician_user,
                    done=not result.error, outcome=result.outcome or result.message)
        await client.send(result)

    async def on_services(self, client: AgentClient, request: ServiceListRequest) -> None:
        if not self._allowed():
            await client.send(_refused(request.id, "policy", "the device's policy switches tools off"))
            return
        try:
            units, truncated = await asyncio.to_thread(self.services.units)
        except Unavailable as exc:
            await client.send(_refused(request.id, "unavailable", str(exc)))
            return
        await client.send(ToolResult(in_reply_to=request.id, services=units, truncated=truncated))

    async def on_action(self, client: AgentClient, request: ServiceActionRequest) -> None:
        refusal = self._refusal(request.session_id, request.technician_user, "services")
        result: ToolResult
        if refusal is not None:
            result = _refused(request.id, *refusal)
        else:
            try:
                outcome = await asyncio.to_thread(self.services.act, request.unit, request.action)
                result = ToolResult(in_reply_to=request.id, outcome=outcome)
            except Unavailable as exc:
                code = "unavailable" if str(exc).startswith("not available") else "failed"
                result = _refused(request.id, code, str(exc))
        self._audit("tools.service.action", unit=request.unit, action=request.action,
                    session_id=request.session_id, technician=request.technician,
                    technician_user=request.technician_user, done=not result.error,
                    outcome=result.outcome or result.message)
        await client.send(result)

    async def on_journal(self, client: AgentClient, request: JournalRequest) -> None:
        if not self._allowed():
            await client.send(_refused(request.id, "policy", "the device's policy switches tools off"))
            return
        try:
            lines = await asyncio.to_thread(self.services.journal, request.unit, request.lines)
            result = ToolResult(in_reply_to=request.id, journal=lines)
        except Unavailable as exc:
            result = _refused(request.id, "unavailable", str(exc))
        self._audit("tools.service.journal", unit=request.unit, technician=request.technician,
                    technician_user=request.technician_user, done=not result.error)
        await client.send(result)


def _refused(in_reply_to: str, code: str, message: str) -> ToolResult:
    return ToolResult(in_reply_to=in_reply_to, error=code, message=message[:256])  # type: ignore[arg-type]


def attach(feature: ToolsFeature) -> None:
    client = feature.client
    client.register(ProcessListRequest, feature.on_processes)
    client.register(ProcessEndRequest, feature.on_end)
    client.register(ServiceListRequest, feature.on_services)
    client.register(ServiceActionRequest, feature.on_action)
    client.register(JournalRequest, feature.on_journal)
