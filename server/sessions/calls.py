"""Calls on a running session (view, people, end, mode, proof, invite, join, hand, leave), as actions.

A session lives on one node: the one whose relay pairs its two tunnel ends. Each action here runs
on that node, with the caller's :class:`~server.auth.rights.Principal` and the session's group, and
answers ``(status, body)`` — the HTTP answer. The console route (:mod:`.api`) runs it locally when the
session is live here; otherwise, on a node with a bus, it asks which node holds the session and
forwards the call over NATS (:mod:`server.bus.routing`), where :func:`run_forwarded` re-reads the
caller's rights from the shared database and runs the same action. So a technician signed in on
node A drives a session on node C through A alone: no cross-origin calls, no cookie for C's host.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from protocol.authority import TechnicianProof
from protocol.session import EndReason, Mode, SessionState
from server.accounts import users
from server.auth.rights import ANY_GROUP, Principal, Right
from server.errors import ApiError
from server.store import Database, Row

from . import notes, repository, views
from .driver import SessionDriver
from .live import LiveSession
from .teamwork import Teamwork

Reply = tuple[int, dict[str, Any]]

#: Row states of a session that may be live on some node (the others are over everywhere).
LIVE_STATES = frozenset({SessionState.REQUESTED.value, SessionState.OFFERED.value, SessionState.CONSENTED.value,
                         SessionState.STREAMING.value})

Username = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._@-]{1,64}$")]


class SessionModeChange(msgspec.Struct):
    mode: Mode


class SessionNotesText(msgspec.Struct):
    text: notes.NotesText


class SessionInvite(msgspec.Struct):
    technician: Username


class SessionJoinRequest(msgspec.Struct):
    reason: Annotated[str, msgspec.Meta(max_length=256, description="Shown to the device user.")] = ""


class SessionHandOff(msgspec.Struct):
    technician: Username


@dataclass(frozen=True)
class Call:
    """One call on a session: who, on which session (and its group), with which checked body."""

    session_id: str
    caller: Principal
    group: str
    db: Database
    body: Any = None


Run = Callable[[SessionDriver, Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Action:
    run: Run
    #: The msgspec Struct of the body (None: no body); a forwarded body is converted to it again.
    body: type[Any] | None = None


def _require(caller: Principal, right: Right, group: str) -> None:
    if not caller.can(right, group):
        raise ApiError(403, "forbidden", f"requires right {'+'.join(right.as_names())} on group {group!r}")


async def _row(call: Call, *, with_notes: bool = False) -> Row:
    row = await (repository.get_with_notes(call.db, call.session_id) if with_notes
                 else repository.get(call.db, call.session_id))
    if row is None:
        raise ApiError.not_found("session")
    return row


def _running(sessions: SessionDriver, call: Call) -> LiveSession:
    live = sessions.live.get(call.session_id)
    if live is None:
        raise ApiError(409, "not_live", "the session has ended")
    return live


def _own_live(sessions: SessionDriver, call: Call) -> LiveSession | None:
    """The running session, if any; 403 unless it is the caller's (or the caller is an admin)."""
    live = sessions.live.get(call.session_id)
    if live is None or call.caller.is_admin:
        return live
    people, me = live.people, call.caller.username
    # The controller's (after a hand-off too), or the requester's while they are still in it.
    if me != people.controller and not (me == live.technician_user and me in people.viewers):
        raise ApiError(403, "forbidden", "not your session")
    return live


def _teamwork(sessions: SessionDriver) -> Teamwork:
    assert sessions.teamwork is not None, "wired by server.sessions.setup"
    return sessions.teamwork


async def get_session(sessions: SessionDriver, call: Call) -> Reply:
    """One session"""
    row = await _row(call, with_notes=True)
    return 200, views.current_view(row, sessions.live.get(row["id"]))


async def get_people(sessions: SessionDriver, call: Call) -> Reply:
    """Who is in a running session"""
    live = _running(sessions, call)
    candidates = []
    if call.caller.username == live.people.controller:
        candidates = await candidates_for(call.db, live.group, live.people.viewers)
    return 200, {"session_id": live.session_id, **live.people.view(), "candidates": candidates}


async def invite(sessions: SessionDriver, call: Call) -> Reply:
    """Invite a technician into the session"""
    live = _running(sessions, call)
    await _teamwork(sessions).invite(live, call.caller, call.body.technician)
    return 200, {"session_id": live.session_id, **live.people.view()}


async def join(sessions: SessionDriver, call: Call) -> Reply:
    """Ask to join the session (view only)"""
    live = _running(sessions, call)
    admitted = await _teamwork(sessions).join(live, call.caller, call.body.reason)
    return (200 if admitted else 202), {"session_id": live.session_id, "admitted": admitted, **live.people.view()}


async def hand_off(sessions: SessionDriver, call: Call) -> Reply:
    """Hand control to another technician in the session"""
    live = _running(sessions, call)
    await _teamwork(sessions).hand(live, call.caller, call.body.technician)
    return 200, {"session_id": live.session_id, **live.people.view()}


async def leave(sessions: SessionDriver, call: Call) -> Reply:
    """Leave the session"""
    live = _running(sessions, call)
    await _teamwork(sessions).leave(live, call.caller.username)
    return 200, {"session_id": live.session_id, **live.people.view()}


async def end_session(sessions: SessionDriver, call: Call) -> Reply:
    """End a session"""
    live = _own_live(sessions, call)
    if live is not None:
        await sessions.finisher.finish(live, EndReason.TECHNICIAN.value, "technician")
    return 200, views.row_view(await _row(call))


async def change_mode(sessions: SessionDriver, call: Call) -> Reply:
    """Ask to switch view/control"""
    mode = call.body.mode
    if mode == "control":
        _require(call.caller, Right.REMOTE_CONTROL, call.group)
    caller = call.caller
    live = _own_live(sessions, call)
    if live is None:
        raise ApiError(409, "not_live", "the session has ended")
    if live.people.controller is None:
        raise ApiError(409, "nobody_controls", "the controlling technician left: the session stays view only")
    if caller.username != live.people.controller and not caller.is_admin:
        raise ApiError(403, "forbidden", "only the controlling technician may ask for another mode")
    await sessions.request_mode(live, mode, caller.username)
    return 202, views.live_view(live)


async def send_proof(sessions: SessionDriver, call: Call) -> Reply:
    """Send the technician's signature over the device's challenge"""
    caller = call.caller
    live = sessions.live.get(call.session_id)
    if live is None:
        raise ApiError(409, "not_live", "the session has ended")
    if caller.username != (live.challenge_for or live.technician_user):
        raise ApiError(403, "forbidden", "only the technician the device challenged (who requested the session, "
                                         "or who joins it) may answer its challenge")
    await sessions.relay_proof(live, call.body, caller.username)
    row = await _row(call, with_notes=True)
    return 200, views.current_view(row, sessions.live.get(row["id"]))


ACTIONS: dict[str, Action] = {
    "get": Action(get_session), "people": Action(get_people), "end": Action(end_session),
    "mode": Action(change_mode, SessionModeChange), "proof": Action(send_proof, TechnicianProof),
    "invite": Action(invite, SessionInvite), "join": Action(join, SessionJoinRequest),
    "hand": Action(hand_off, SessionHandOff), "leave": Action(leave),
}


async def may_be_elsewhere(db: Database, session_id: str) -> bool:
    """The stored session may be live on another node (worth asking the bus who holds it)."""
    row = await repository.get(db, session_id)
    return row is not None and row["state"] in LIVE_STATES


async def run_forwarded(sessions: SessionDriver, db: Database, *, action: str, session_id: str, user_id: str,
                        login_id: str | None, body: Any) -> Reply:
    """A call another node forwarded: the caller and their rights are read here, the route's check repeated."""
    spec = ACTIONS.get(action)
    if spec is None:
        raise ApiError(400, "bad_request", "no such session call")
    user = await users.get_row(db, user_id=user_id)
    if user is None or user["disabled"]:
        raise ApiError(403, "forbidden", "unknown or disabled technician")
    caller = await users.principal_for(db, user, login_id)
    row = await repository.get(db, session_id)
    if row is None or caller.rights_on(row["group_name"]) is Right.NONE:
        raise ApiError.not_found("session")
    _require(caller, Right.REMOTE_VIEW, row["group_name"])
    checked = None if spec.body is None else msgspec.convert(body or {}, spec.body)
    return await spec.run(sessions, Call(session_id, caller, row["group_name"], db, checked))


async def candidates_for(db: Database, group: str, present: list[str]) -> list[str]:
    """Technicians of this server who could watch: enabled, remote_view on ``group``, not in the session yet."""
    found = []
    for user in await users.list_users(db):
        if user.disabled or user.username in present:
            continue
        rights = await users.rights_of(db, user.id, user.role)
        if Right.REMOTE_VIEW in rights.get(group, Right.NONE) | rights.get(ANY_GROUP, Right.NONE):
            found.append(user.username)
    return found[:200]
