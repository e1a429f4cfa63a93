"""Calls on a running session (view, people, end, mode, proof, invite, join, hand, leave), as actions.

A session lives on one node: the one whose relay pairs its two tunnel ends. Each action here runs
on that node, with the caller's :class:`~server.auth.rights.Principal` and the session's group, and
answers ``(status, body)`` — the HTTP answer. The console route (:mod:`.api`) runs it locally when the
session is live here; otherwise, on a node with a bus, it asks which node holds the session and
forwards the call over NATS (:mod:`server.bus.routing`), where :func:`run_forwarded` re-reads the
caller's rights from the shared database and runs the same action. So a technician signed in on
node A drives a session on node C through A alone: no cross-origin calls, no cookie for C's host. C also
re-checks the login the call came under (the cookie session, or the API token: ``Principal.token_id``), so a
token revoked in between is refused there, and audits each forwarded call that changes something, naming the
token: before it runs, and its outcome after (failures included).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from protocol.authority import TechnicianProof
from protocol.session import EndReason, Mode, SessionState
from server import audit
from server.accounts import sessions as console_sessions
from server.accounts import users
from server.auth.rights import ANY_GROUP, Principal, Right
from server.errors import ApiError
from server.store import Database, Row

from . import notes, repository, views
from .driver import SessionDriver
from .live import LiveSession
from .teamwork import Teamwork

log = logging.getLogger(__name__)

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


#: Calls that only read: not audited when forwarded (the console polls them every second).
READS = frozenset({"get", "people"})


#: :func:`login_refused`'s reason when a request names neither a login nor a token: every node since login_id/
#: token_id were added names one, so it came from a node older than this one (a rolling upgrade).
NO_LOGIN_NAMED = "no login named"


def login_refusal(refused: str, what: str) -> ApiError:
    """The error for a forwarded call or routed start refused by :func:`login_refused`: an older routing node's
    request gets its own code, telling the user what to do, rather than a login that "ended"."""
    if refused == NO_LOGIN_NAMED:
        return ApiError(409, "routing_node_too_old",
                        f"{what} came through a node older than this one, which does not name the login behind it: "
                        "start the session on an upgraded node")
    return ApiError(403, "login_ended", f"{what} refused: {refused}")


async def login_refused(db: Database, user_id: str, login_id: str | None, token_id: str | None) -> str | None:
    """Why the login a forwarded call or routed session start was made under is not live now (None: it is). The
    first node checked it a moment ago; this closes the window in between and refuses a request no live login
    stands behind (an older node's token caller, whose request names no login, included)."""
    now = time.time()
    if token_id is not None:
        token = await db.fetchone("SELECT user_id, expires_at, revoked_at FROM api_tokens WHERE id = ?", (token_id,))
        if token is None or token["user_id"] != user_id:
            return "unknown token"
        if token["revoked_at"] is not None:
            return "token revoked"
        if token["expires_at"] is not None and token["expires_at"] <= now:
            return "token expired"
        return None
    if not login_id:
        return NO_LOGIN_NAMED
    login = await db.fetchone("SELECT user_id, created_at, revoked_at FROM console_sessions WHERE id = ?",
                              (login_id,))
    if login is None or login["user_id"] != user_id:
        return "unknown login"
    if login["revoked_at"] is not None or now - login["created_at"] >= console_sessions.ABSOLUTE_S:
        return "login ended"
    return None


async def run_forwarded(sessions: SessionDriver, db: Database, *, action: str, session_id: str, user_id: str,
                        login_id: str | None, body: Any, token_id: str | None = None, from_node: str = "") -> Reply:
    """A call another node forwarded: the caller, their login (cookie session or API token) and their rights are
    read here, the route's check repeated. A refused login and every call that changes something are audited
    here, naming the token when the caller used one."""
    spec = ACTIONS.get(action)
    if spec is None:
        raise ApiError(400, "bad_request", "no such session call")
    user = await users.get_row(db, user_id=user_id)
    if user is None or user["disabled"]:
        raise ApiError(403, "forbidden", "unknown or disabled technician")
    who = {"action": action, "node": from_node, **({"token": token_id} if token_id else {})}
    refused = await login_refused(db, user_id, login_id, token_id)
    if refused is not None:
        await audit.append(db, f"user:{user['username']}", "session.call.refused", session_id,
                           {**who, "reason": refused})
        raise login_refusal(refused, "the forwarded call")
    caller = dataclasses.replace(await users.principal_for(db, user, None if token_id else login_id),
                                 token_id=token_id)
    row = await repository.get(db, session_id)
    if row is None or caller.rights_on(row["group_name"]) is Right.NONE:
        raise ApiError.not_found("session")
    _require(caller, Right.REMOTE_VIEW, row["group_name"])
    checked = None if spec.body is None else msgspec.convert(body or {}, spec.body)
    work = Call(session_id, caller, row["group_name"], db, checked)
    if action in READS:
        return await spec.run(sessions, work)
    return await _audited(lambda: spec.run(sessions, work), db, f"user:{caller.username}", session_id, who)


async def _audited(run: Callable[[], Awaitable[Reply]], db: Database, actor: str, session_id: str,
                   who: dict[str, Any]) -> Reply:
    """Run a forwarded call that changes something, recorded before and after.

    The actions are no single transaction (most tell the agent), so the record that the call is made is written
    *before* it runs (that write failing: nothing done, 500). Its outcome (``session.call.done``: the HTTP status,
    500 for an exception) follows; a failure to write that is logged and does not turn a call that was done into
    one reported failed, since the first record already stands for it."""
    await audit.append(db, actor, "session.call.forwarded", session_id, who)
    status = 500
    try:
        status, answer = await run()
        return status, answer
    except ApiError as exc:
        status = exc.status
        raise
    finally:
        try:
            await audit.append(db, actor, "session.call.done", session_id, {**who, "status": status})
        except Exception:
            log.exception("forwarded call's outcome not audited", extra={"session_id": session_id,
                                                                        "action": who["action"]})


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
