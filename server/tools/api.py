"""REST routes of the device's Processes and Services tabs (issue 16).

Listing processes or units and reading a unit's journal need ``remote_view`` on the device's group;
ending a process or starting/stopping/restarting a unit needs ``remote_control`` **and** the caller's
own streaming control session on this device (``session_id``), which the device checks again against
its own record (and, unattended, against the grant's ``processes``/``services`` action). Changes and
journal reads are audited here, whatever the device answered; the device keeps its own audit too.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web

from protocol.tools import (
    MAX_GRACE_S,
    MAX_JOURNAL_LINES,
    JournalRequest,
    ProcessEndRequest,
    ProcessListRequest,
    ServiceAction,
    ServiceActionRequest,
    ServiceListRequest,
    ToolResult,
)

from .. import api, audit
from ..api.scopes import DEVICE
from ..auth.rights import Right
from ..sessions import SESSIONS
from ..store import Database
from .calls import CHANGE_TIMEOUT_S, LIST_TIMEOUT_S, ToolCalls

SessionId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]*$")]

#: The device's refusal → HTTP status and error code.
_STATUS = {"policy": (403, "device_policy"), "no_authority": (403, "no_authority"), "not_found": (404, "not_found"),
           "denied": (403, "denied"), "unavailable": (409, "unavailable"), "failed": (502, "failed"),
           "invalid": (400, "invalid")}


class EndProcess(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    session_id: Annotated[SessionId, msgspec.Meta(description="Your streaming control session on this device")]
    started_at: Annotated[float, msgspec.Meta(ge=0, description=(
        "The process's start time as listed: a reused pid is not ended"))] | None = None
    grace_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_GRACE_S, description="SIGTERM, then SIGKILL after this")] = 5.0


class UnitAction(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    action: ServiceAction
    session_id: Annotated[SessionId, msgspec.Meta(description="Your streaming control session on this device")]


class JournalQuery(msgspec.Struct):
    lines: Annotated[int, msgspec.Meta(ge=1, le=MAX_JOURNAL_LINES)] = 50


def _answer(result: ToolResult) -> ToolResult:
    if result.error:
        status, code = _STATUS.get(result.error, (502, "failed"))
        raise api.ApiError(status, code, result.message or result.error)
    return result


def _request(kind: type[Any], **fields: Any) -> Any:
    """Build a request the way the device will decode it, so path values get the protocol's validation."""
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        raise api.ApiError.invalid(str(exc)) from exc


async def check_session(db: Database, device_id: str, session_id: str, username: str,
                        controller: str | None = None) -> None:
    """A control session streaming to this device that the caller controls — or 403 saying what is missing.

    ``controller`` is who controls the running session on this node (after a hand-off, not the requester);
    without it (the session runs elsewhere) the requester recorded in the database is taken."""
    row = await db.fetchone("SELECT device_id, technician_user, state, mode FROM sessions WHERE id = ?",
                            (session_id,))
    if row is None or row["device_id"] != device_id:
        raise api.ApiError(403, "no_authority", "changes need your running control session on this device")
    if (controller if controller is not None else row["technician_user"]) != username:
        raise api.ApiError(403, "no_authority", "that session is controlled by another technician")
    if row["state"] != "streaming":
        raise api.ApiError(403, "no_authority", "that session is not running")
    if row["mode"] != "control":
        raise api.ApiError(403, "no_authority", "that session was allowed to view only")


async def _checked(request: web.Request, device: str, session_id: str, action: str, details: dict[str, Any]) -> None:
    """:func:`check_session`, with a refusal audited like an attempt that reached the device."""
    caller = api.principal(request)
    try:
        live = request.app[SESSIONS].live.get(session_id)
        await check_session(api.db(request), device, session_id, caller.username,
                            live.people.controller if live is not None else None)
    except api.ApiError as exc:
        await audit.append(api.db(request), f"user:{caller.username}", action, device,
                           {**details, "done": False, "outcome": exc.message})
        raise


def routes(calls: ToolCalls) -> list[api.Route]:
    async def list_processes(request: web.Request) -> web.Response:
        """The device's processes, live from psutil (CPU % since the previous listing of this device)"""
        caller = api.principal(request)
        device = request.match_info["device_id"]
        result = _answer(await calls.ask(device, ProcessListRequest(
            technician=caller.username, technician_user=caller.username), LIST_TIMEOUT_S))
        return api.json({"processes": [msgspec.to_builtins(p) for p in result.processes or []],
                         "truncated": result.truncated})

    async def end_process(request: web.Request) -> web.Response:
        """End a process: SIGTERM, then SIGKILL after the grace (needs your running control session)"""
        caller = api.principal(request)
        device = request.match_info["device_id"]
        body = api.body(request, EndProcess)
        try:
            pid = int(request.match_info["pid"])
        except ValueError as exc:
            raise api.ApiError.invalid("pid must be a number") from exc
        message = _request(ProcessEndRequest, technician=caller.username, technician_user=caller.username,
                           session_id=body.session_id, pid=pid, started_at=body.started_at, grace_s=body.grace_s)
        details = {"pid": pid, "session_id": body.session_id, "request_id": message.id}
        await _checked(request, device, body.session_id, "device.process.end", details)
        result = await calls.ask(device, message, CHANGE_TIMEOUT_S)
        await audit.append(api.db(request), f"user:{caller.username}", "device.process.end", device, {
            **details, "done": not result.error, "outcome": result.outcome or result.message})
        return api.json({"outcome": _answer(result).outcome})

    async def list_services(request: web.Request) -> web.Response:
        """The device's systemd service units (409 ``unavailable`` where systemd is not the init system)"""
        caller = api.principal(request)
        device = request.match_info["device_id"]
        result = _answer(await calls.ask(device, ServiceListRequest(
            technician=caller.username, technician_user=caller.username), LIST_TIMEOUT_S))
        return api.json({"services": [msgspec.to_builtins(s) for s in result.services or []],
                         "truncated": result.truncated})

    async def unit_journal(request: web.Request) -> web.Response:
        """The last journal lines of a unit"""
        caller = api.principal(request)
        device, unit = request.match_info["device_id"], request.match_info["unit"]
        lines = api.query(request, JournalQuery).lines
        message = _request(JournalRequest, technician=caller.username, technician_user=caller.username,
                           unit=unit, lines=lines)
        result = await calls.ask(device, message, LIST_TIMEOUT_S)
        await audit.append(api.db(request), f"user:{caller.username}", "device.service.journal", device, {
            "unit": unit, "lines": lines, "done": not result.error, "request_id": message.id})
        return api.json({"journal": [msgspec.to_builtins(j) for j in _answer(result).journal or []]})

    async def unit_action(request: web.Request) -> web.Response:
        """Start, stop or restart a unit (needs your running control session)"""
        caller = api.principal(request)
        device, unit = request.match_info["device_id"], request.match_info["unit"]
        body = api.body(request, UnitAction)
        message = _request(ServiceActionRequest, technician=caller.username, technician_user=caller.username,
                           session_id=body.session_id, unit=unit, action=body.action)
        details = {"unit": unit, "action": body.action, "session_id": body.session_id, "request_id": message.id}
        await _checked(request, device, body.session_id, "device.service.action", details)
        result = await calls.ask(device, message, CHANGE_TIMEOUT_S)
        await audit.append(api.db(request), f"user:{caller.username}", "device.service.action", device, {
            **details, "done": not result.error, "outcome": result.outcome or result.message})
        return api.json({"outcome": _answer(result).outcome})

    offline = {409: "The device is offline, its agent has no tools, or (services) systemd is not running",
               503: "Too many requests are waiting for devices", 504: "The device did not answer in time"}
    changes = {**offline, 502: "The device could not do it"}
    view, control = Right.REMOTE_VIEW, Right.REMOTE_CONTROL
    return [
        api.Route("GET", "/api/v1/devices/{device_id}/processes", list_processes, view, DEVICE,
                  response=dict[str, Any], errors=offline),
        api.Route("POST", "/api/v1/devices/{device_id}/processes/{pid}/end", end_process, control, DEVICE,
                  body=EndProcess, response=dict[str, Any], errors=changes),
        api.Route("GET", "/api/v1/devices/{device_id}/services", list_services, view, DEVICE,
                  response=dict[str, Any], errors=offline),
        api.Route("GET", "/api/v1/devices/{device_id}/services/{unit}/journal", unit_journal, view, DEVICE,
                  query=JournalQuery, response=dict[str, Any], errors=offline),
        api.Route("POST", "/api/v1/devices/{device_id}/services/{unit}/actions", unit_action, control, DEVICE,
                  body=UnitAction, response=dict[str, Any], errors=changes),
    ]
