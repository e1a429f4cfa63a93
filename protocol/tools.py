"""Tools without the screen (issue 16): processes and systemd services, over the control channel (sans-I/O).

The server asks, the agent answers one :class:`ToolResult` per request (``in_reply_to``). Reading
(process list, unit list, a unit's journal) needs only the device's local policy ``allow_tools``;
changing something (ending a process, starting/stopping/restarting a unit) also needs the
technician's authority **as the device sees it**: ``session_id`` must name a session running on
the device in control mode whose technician is ``technician_user`` — consented by the user
(attended) or under an approver-signed grant that also names the ``processes``/``services``
action (unattended). The server's word alone never ends a process.

Every list is bounded so one answer stays far below the control channel's 4 MiB message cap:
:data:`MAX_PROCESSES` × (:data:`MAX_CMDLINE` + names) ≈ 1.3 MB at worst.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec

from .messages import Id, Message, ShortStr

MAX_PROCESSES = 2000
MAX_CMDLINE = 512
MAX_SERVICES = 2000
MAX_JOURNAL_LINES = 500
MAX_JOURNAL_LINE = 1024
#: The longest a technician may let a process handle SIGTERM before SIGKILL.
MAX_GRACE_S = 30.0

Pid = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
#: systemd unit names: ``name.type``, letters, digits, ``:-_.\\@`` (systemd.unit(5)); never an option (``-…``).
Unit = Annotated[str, msgspec.Meta(min_length=3, max_length=256, pattern=r"^[A-Za-z0-9:_.\\@][A-Za-z0-9:_.\\@-]*$")]
ServiceAction = Literal["start", "stop", "restart"]
Cmdline = Annotated[str, msgspec.Meta(max_length=MAX_CMDLINE)]
JournalText = Annotated[str, msgspec.Meta(max_length=MAX_JOURNAL_LINE)]
#: Why a request failed, machine-readable: the console and the API map these to statuses.
ErrorCode = Literal["", "policy", "no_authority", "not_found", "denied", "unavailable", "failed", "invalid"]


class ProcessListRequest(Message, frozen=True, kw_only=True, tag="tools.processes.list"):
    """Every process: pid, name, user, CPU %, memory, command line."""

    sender: ClassVar[str] = "server"
    #: Who asks (the server's word; for changes checked against the device's own session record).
    technician: ShortStr
    technician_user: ShortStr


class ProcessEndRequest(Message, frozen=True, kw_only=True, tag="tools.process.end"):
    """End ``pid`` (SIGTERM, then SIGKILL after ``grace_s``); ``started_at`` guards against a reused pid."""

    sender: ClassVar[str] = "server"
    technician: ShortStr
    technician_user: ShortStr
    #: The technician's running control session on this device (the authority the device checks).
    session_id: Id | None = None
    pid: Pid
    started_at: Annotated[float, msgspec.Meta(ge=0)] | None = None
    grace_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_GRACE_S)] = 5.0


class ServiceListRequest(Message, frozen=True, kw_only=True, tag="tools.services.list"):
    """systemd service units: name, load/active/sub state, description."""

    sender: ClassVar[str] = "server"
    technician: ShortStr
    technician_user: ShortStr


class ServiceActionRequest(Message, frozen=True, kw_only=True, tag="tools.service.action"):
    sender: ClassVar[str] = "server"
    technician: ShortStr
    technician_user: ShortStr
    session_id: Id | None = None
    unit: Unit
    action: ServiceAction


class JournalRequest(Message, frozen=True, kw_only=True, tag="tools.service.journal"):
    """The last ``lines`` journal entries of ``unit``."""

    sender: ClassVar[str] = "server"
    technician: ShortStr
    technician_user: ShortStr
    unit: Unit
    lines: Annotated[int, msgspec.Meta(ge=1, le=MAX_JOURNAL_LINES)] = 50


class ProcessInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pid: Pid
    ppid: Annotated[int, msgspec.Meta(ge=0)]
    name: ShortStr
    user: ShortStr
    cpu_percent: Annotated[float, msgspec.Meta(ge=0)]
    memory_rss: Annotated[int, msgspec.Meta(ge=0)]
    memory_percent: Annotated[float, msgspec.Meta(ge=0)]
    status: ShortStr
    started_at: Annotated[float, msgspec.Meta(ge=0)]
    cmdline: Cmdline


class ServiceInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    unit: Annotated[str, msgspec.Meta(max_length=256)]
    load: ShortStr
    active: ShortStr
    sub: ShortStr
    description: ShortStr


class JournalLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ts: Annotated[float, msgspec.Meta(ge=0)]
    priority: Annotated[int, msgspec.Meta(ge=0, le=7)]
    message: JournalText


class ToolResult(Message, frozen=True, kw_only=True, tag="tools.result"):
    """Agent → server: the answer to one tools request; ``error`` empty = it worked."""

    sender: ClassVar[str] = "agent"
    in_reply_to: Id
    error: ErrorCode = ""
    message: ShortStr = ""
    processes: Annotated[list[ProcessInfo], msgspec.Meta(max_length=MAX_PROCESSES)] | None = None
    services: Annotated[list[ServiceInfo], msgspec.Meta(max_length=MAX_SERVICES)] | None = None
    journal: Annotated[list[JournalLine], msgspec.Meta(max_length=MAX_JOURNAL_LINES)] | None = None
    #: What a change did, in words ("ended with SIGTERM", "killed after 5 s", "restarted").
    outcome: ShortStr = ""
    #: Lists were cut at their cap.
    truncated: bool = False


#: Requests that change the device (they need a session's authority and are audited as changes).
CHANGING = (ProcessEndRequest, ServiceActionRequest)
ToolRequest = ProcessListRequest | ProcessEndRequest | ServiceListRequest | ServiceActionRequest | JournalRequest
