"""Join, invite, hand-off and leave for a running session: the roster (:mod:`.people`) moved by the API and the
agent, audited at every step, with the relay (:mod:`.relay`) following the roster.

The device has the last word on who watches: a join is a ``session.join`` the agent answers after asking the
user (or under the first prompt's "my helpdesk may bring colleagues"); a hand-off or leave is a
``session.people`` the agent must apply (it refuses a roster naming someone it never admitted) before the
relay passes the new controller's input on. Unattended sessions take no joiners yet (the agent refuses: a
joiner would need its own proof against the grant).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from common.background import Background
from protocol.session import (
    CONSENT_TIMEOUT_S,
    EndReason,
    SessionJoin,
    SessionJoinAnswer,
    SessionPeople,
    SessionPeopleApplied,
    SessionState,
)
from server import audit
from server.accounts import users
from server.auth.rights import Principal, Right
from server.connections import ConnectionRegistry
from server.errors import ApiError
from server.store import Database

from .driver import PROOF_WAIT_S
from .finish import Finisher
from .live import LiveSession, LiveTable

if TYPE_CHECKING:
    from server.agent_channel import AgentConnection

log = logging.getLogger(__name__)

#: How long the device has to answer a join (its prompt's timeout plus the round trip).
JOIN_ANSWER_WAIT_S = CONSENT_TIMEOUT_S + 10.0
#: How long a hand-off or leave waits for the agent to apply the new roster.
PEOPLE_APPLIED_WAIT_S = 10.0


class Teamwork:
    def __init__(self, db: Callable[[], Database], connections: ConnectionRegistry, live: LiveTable,
                 finisher: Finisher) -> None:
        self._db = db
        self.connections = connections
        self.live = live
        self.finisher = finisher
        self._joins: dict[tuple[str, str], asyncio.Future[SessionJoinAnswer]] = {}
        self._applied: dict[str, asyncio.Future[SessionPeopleApplied]] = {}
        self._background = Background()

    @property
    def db(self) -> Database:
        return self._db()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._background.spawn(coro)

    async def close(self) -> None:
        """The server stops: nothing spawned here outlives it."""
        await self._background.cancel_all()

    async def _audit(self, session: LiveSession, actor: str, action: str, **details: Any) -> None:
        await audit.append(self.db, actor, action, session.device_id, {"session_id": session.session_id, **details})

    @staticmethod
    def _streaming(session: LiveSession) -> None:
        if session.machine.state is not SessionState.STREAMING or session.finished:
            raise ApiError(409, "not_streaming", "the session is not streaming")

    # --- the API's verbs --------------------------------------------------------------------

    async def invite(self, session: LiveSession, by: Principal, user: str) -> None:
        """The controller invites ``user``; a user who already asked goes to the device now."""
        self._streaming(session)
        refusal = session.people.invite(by.username, user)
        if not refusal:
            refusal = await self._account_refusal(session, user)
            if refusal:
                session.people.invited.pop(user, None)
        if refusal:
            await self._audit(session, f"user:{by.username}", "session.invite_refused", technician=user, why=refusal)
            raise ApiError(409, "invite_refused", refusal)
        await self._audit(session, f"user:{by.username}", "session.invited", technician=user)
        if user in session.people.asking:
            may_control = user in session.people.may_control_asked
            self._spawn(self._ask_device(session, user, session.people.roles.get(user, "technician"), "",
                                         may_control))
        session.notify()

    async def _account_refusal(self, session: LiveSession, user: str) -> str:
        """Why ``user`` may not be invited, from their account when this server has one ("" = may)."""
        row = await users.get_row(self.db, username=user)
        if row is None:
            return ""  # not an account here (e.g. an external authenticator): the join route checks the rights
        if row["disabled"]:
            return f"{user}'s account is disabled"
        principal = await users.principal_for(self.db, row, None)
        if Right.REMOTE_VIEW not in principal.rights_on(session.group):
            return f"{user} lacks remote_view on group {session.group!r}"
        return ""

    async def join(self, session: LiveSession, who: Principal, reason: str) -> bool:
        """The caller asks to join: False when they wait for an invitation; True once the device admitted them.
        ApiError 403 when the device refused (the user said No, nobody to ask, unattended)."""
        self._streaming(session)
        people = session.people
        may_control = Right.REMOTE_CONTROL in who.rights_on(session.group)
        refusal = people.ask(who.username)
        if refusal == "asked":
            people.roles[who.username] = who.role
            if may_control:
                people.may_control_asked.add(who.username)
            await self._audit(session, f"user:{who.username}", "session.join_asked", reason=reason)
            session.notify()
            return False
        if refusal:
            raise ApiError(409, "join_refused", refusal)
        if session.document_id is not None and people.joining:
            raise ApiError(409, "join_busy", "the device is asking another joiner for a proof; try again shortly")
        answer = await self._ask_device(session, who.username, who.role, reason, may_control)
        if not answer.accepted:
            raise ApiError(403, "join_refused", f"the device refused: {answer.reason or answer.by}")
        return True

    async def _ask_device(self, session: LiveSession, user: str, role: str, reason: str,
                          may_control: bool) -> SessionJoinAnswer:
        """Send ``session.join`` and wait for the device's answer; admit or refuse, audit, tell everyone."""
        people = session.people
        people.start_join(user)
        session.notify()
        invited_by = people.invited.get(user) or people.controller or session.technician_user
        key = (session.session_id, user)
        waiting: asyncio.Future[SessionJoinAnswer] = asyncio.get_running_loop().create_future()
        self._joins[key] = waiting
        conn = self.connections.get(session.device_id)
        try:
            if conn is None:
                answer = SessionJoinAnswer(session_id=session.session_id, technician=user, accepted=False,
                                           by="unavailable", reason="the device is not connected")
            else:
                await conn.send(SessionJoin(session_id=session.session_id, technician=user, technician_role=role,
                                            invited_by=invited_by, reason=reason[:256]))
                try:
                    answer = await asyncio.wait_for(waiting, JOIN_ANSWER_WAIT_S + (
                        PROOF_WAIT_S if session.document_id is not None else 0.0))
                except TimeoutError:
                    answer = SessionJoinAnswer(session_id=session.session_id, technician=user, accepted=False,
                                               by="timeout", reason="the device did not answer")
        finally:
            self._joins.pop(key, None)
            if session.challenge_for == user:  # a join's challenge, answered or not, is over with the answer
                session.challenge, session.challenge_for = None, None
        admitted = answer.accepted and not session.finished
        people.join_answered(user, admitted, may_control)
        actor = f"device:{session.device_id}"
        if admitted:
            await self._audit(session, actor, "session.joined", technician=user, by=answer.by, reason=answer.reason,
                              invited_by=invited_by)
            await self._tell_agent(session, wait=False)
        else:
            await self._audit(session, actor, "session.join_refused", technician=user, by=answer.by,
                              reason=answer.reason)
        session.notify()
        return answer

    async def hand(self, session: LiveSession, by: Principal, to: str) -> None:
        """The controller hands control to a viewer; the agent applies it before the relay does."""
        self._streaming(session)
        refusal = session.people.hand(by.username, to)
        if refusal:
            await self._audit(session, f"user:{by.username}", "session.handoff_refused", technician=to, why=refusal)
            status = 403 if "lacks" in refusal else 409
            raise ApiError(status, "handoff_refused", refusal)
        applied = await self._tell_agent(session, controller=to, wait=True)
        if applied is None or not applied.accepted or applied.controller != to:
            why = "the device did not apply it" if applied is None else (applied.reason or "refused by the device")
            await self._audit(session, f"user:{by.username}", "session.handoff_refused", technician=to, why=why)
            raise ApiError(409, "handoff_refused", why)
        session.people.handed(to)
        await self._audit(session, f"user:{by.username}", "session.handed_off", technician=to, previous=by.username)
        session.notify()

    async def leave(self, session: LiveSession, user: str, *, stream_closed: bool = False, how: str = "") -> None:
        """``user`` leaves; the last one out ends the session, a controller leaving ends control."""
        people = session.people
        was_controller = people.controller == user
        if user not in people.viewers:
            raise ApiError(409, "not_in_session", f"{user} is not in the session")
        if people.viewers == [user]:
            await self.finisher.finish(session, EndReason.TECHNICIAN_GONE.value if stream_closed
                                       else EndReason.TECHNICIAN.value, "technician")
            return
        people.leave(user)
        if session.relay is not None and not stream_closed:
            await session.relay.remove(user, "you left the session")
        await self._audit(session, f"user:{user}", "session.left", controller=was_controller,
                          how=how or ("stream closed" if stream_closed else "left"))
        if was_controller:
            await self._audit(session, f"user:{user}", "session.control_ended",
                              why="the controlling technician left without handing control over")
        await self._tell_agent(session, wait=False)
        session.notify()

    async def _tell_agent(self, session: LiveSession, *, controller: str | bool | None = False,
                          wait: bool) -> SessionPeopleApplied | None:
        """Send the roster (with ``controller``, or the current one when False) to the agent."""
        people = session.people
        who = people.controller if controller is False else controller
        assert who is None or isinstance(who, str)
        conn = self.connections.get(session.device_id)
        if conn is None:
            return None
        waiting: asyncio.Future[SessionPeopleApplied] = asyncio.get_running_loop().create_future()
        if wait:
            self._applied[session.session_id] = waiting
        try:
            await conn.send(SessionPeople(session_id=session.session_id, viewers=list(people.viewers),
                                          controller=who))
            if not wait:
                return None
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(waiting, PEOPLE_APPLIED_WAIT_S)
            return None
        finally:
            if wait:
                self._applied.pop(session.session_id, None)

    # --- the agent's answers ------------------------------------------------------------------

    async def on_join_answer(self, conn: AgentConnection, msg: SessionJoinAnswer) -> None:
        session = self.live.get(msg.session_id)
        waiting = self._joins.get((msg.session_id, msg.technician))
        if session is None or session.device_id != conn.device_id or waiting is None or waiting.done():
            await conn.reply_error("unexpected", "no join of this technician waits for an answer", msg.id)
            return
        waiting.set_result(msg)

    async def on_people_applied(self, conn: AgentConnection, msg: SessionPeopleApplied) -> None:
        session = self.live.get(msg.session_id)
        if session is None or session.device_id != conn.device_id:
            return
        waiting = self._applied.get(msg.session_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(msg)
        if not msg.accepted:
            log.warning("the agent refused a roster: %s", msg.reason, extra={"session_id": msg.session_id})
