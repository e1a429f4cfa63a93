"""Drives each live session's :class:`~protocol.session.SessionMachine` from what happens on this node.

Inputs: a technician's request and mode change (the API), the agent's answer and end (the
control channel), the agent's tunnel arriving, the clock (answer and tunnel deadlines), grant
and device revocations. Each input is one verb of the machine — which refuses anything
:data:`~protocol.session.TRANSITIONS` does not list — followed by storing the new state
(:mod:`.repository`), auditing it and telling the agent. Every ending goes through
:class:`~.finish.Finisher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from common.background import Background
from protocol import jpeg_tables, stream, toolkit
from protocol.authority import TechnicianProof
from protocol.authority_messages import SessionChallenge, SessionProof
from protocol.errors import LocalProtocolError
from protocol.session import (
    CONSENT_TIMEOUT_S,
    EndReason,
    Mode,
    SessionAnswer,
    SessionEnd,
    SessionMachine,
    SessionMode,
    SessionOffer,
    SessionState,
)
from server import audit
from server.auth.rights import Principal, Right
from server.authority import push as authority_push
from server.authority import repository as documents
from server.cmdb import screen_backend as backend_record
from server.connections import ConnectionRegistry
from server.errors import ApiError
from server.store import Database

from . import chat, repository
from .finish import Finisher
from .live import LiveSession, LiveTable
from .people import People
from .relay import Recorder, Relay
from .settings import SessionSettings
from .shell_relay import ShellWatch
from .tokens import TunnelToken

if TYPE_CHECKING:
    from server.agent_channel import AgentConnection

    from .teamwork import Teamwork

log = logging.getLogger(__name__)

#: How long a tunnel that arrives before the answer (they travel on different connections)
#: waits for it.
ANSWER_WAIT_S = 5.0
#: Unattended: how long the agent waits for the technician's proof (its ``unattended_proof_timeout_s``);
#: the offer's answer deadline here is that plus a consent prompt the device's policy may still require.
PROOF_WAIT_S = 60.0
#: How long ``POST …/proof`` waits for the agent's answer before answering with the session as it is.
PROOF_ANSWER_WAIT_S = 10.0


async def refuse_control_if_view_only(db: Database, device_id: str) -> None:
    """ApiError 409 ``device_view_only`` when the device said its desktop takes no remote input (a wlroots
    portal: capability ``screen.view-only``): asked for control, it would show the person a prompt and then run
    view-only, so the technician is told before anyone is disturbed and can ask for a view session.

    The devices row says it: the hello's word is written before the welcome and a later
    ``device.screen_backend``'s (a root service whose session helper came or went) before the next message is
    read, and every node reads the same row."""
    if await backend_record.stored_view_only(db, device_id):
        raise ApiError(409, "device_view_only", "this device's desktop offers no remote input (its screen-sharing "
                                                "portal has no RemoteDesktop): ask for a view session")


class SessionDriver:
    """The live sessions of this node and everything that moves them from state to state.

    ``clock`` gives wall-clock seconds for the machine's deadlines and the stored times; tests
    move it forward instead of waiting out a 60 s token life.
    """

    def __init__(self, db: Callable[[], Database], connections: ConnectionRegistry, settings: SessionSettings,
                 live: LiveTable, finisher: Finisher, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self.connections = connections
        self.settings = settings
        self.live = live
        self.finisher = finisher
        self._background = Background()
        #: Join, hand-off and leave (:mod:`.teamwork`), wired by :func:`server.sessions.setup`.
        self.teamwork: Teamwork | None = None

    @property
    def db(self) -> Database:
        return self._db()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._background.spawn(coro)

    async def close(self) -> None:
        """The server stops: its sessions' deadline watchers and other background work end with it."""
        await self._background.cancel_all()
        if self.teamwork is not None:
            await self.teamwork.close()

    # --- the technician asks --------------------------------------------------------------

    async def request(self, *, device_id: str, group: str, technician: Principal, mode: Mode, reason: str,
                      document_id: str | None = None) -> LiveSession:
        """Record the session and offer it to the agent; ApiError 409 when it cannot be offered.

        Unattended (``document_id``): the document must exist here, be an open grant and name the device
        or its group — only so that the offer is not pointless; the agent verifies it for itself.
        """
        document = None
        if document_id is not None:
            document = await documents.get_document(self.db, document_id)
            if document is None or document["kind"] != "grant" or document["status"] != "open" \
                    or not documents.concerns(document, device_id, group):
                raise ApiError(409, "document_unusable", f"no open grant document {document_id} for this device")
        conn = self.connections.get(device_id)
        if conn is None:
            raise ApiError(409, "device_offline", "the device is not connected")
        if mode == "control":
            await refuse_control_if_view_only(self.db, device_id)
        now = self._clock()
        session_id = "s-" + secrets.token_hex(10)
        secret, token = TunnelToken.issue(device_id, conn.certificate_serial, now)
        timeout = CONSENT_TIMEOUT_S + (PROOF_WAIT_S if document is not None else 0.0)
        session = LiveSession(session_id, device_id, group, technician.username, technician.role, reason,
                              SessionMachine(session_id, mode, created_at=now, consent_timeout_s=timeout), token,
                              document_id=document_id)
        session.people = People.starting(technician.username, Right.REMOTE_CONTROL in technician.rights_on(group))
        async with self.db.transaction() as tx:
            await repository.insert(tx, session)
            await audit.append_in(tx, f"user:{technician.username}", "session.requested", device_id,
                                  {"session_id": session_id, "mode": mode, "reason": reason,
                                   "document_id": document_id})
        self.live[session_id] = session
        session.machine.offer(self._clock())
        self._spawn(self._watch_deadlines(session))  # also ends an offer that never reached the agent
        if document is not None and authority_push.speaks_authority(conn):
            # The document first (on the same ordered channel): the agent need not have seen its last push.
            await conn.send(await authority_push.document_for_offer(self.db, document, device_id, group))
        await conn.send(SessionOffer(session_id=session_id, technician=technician.username,
                                     technician_user=technician.username, technician_role=technician.role,
                                     mode=mode, reason=reason[:256], tunnel_token=secret,
                                     document_id=document_id,
                                     jpeg_lean=_offered(conn, jpeg_tables.CAPABILITY),
                                     batched=_offered(conn, stream.BATCH_CAPABILITY)))
        await repository.save_state(self.db, session, self._clock())
        await audit.append(self.db, "server", "session.offered", device_id,
                           {"session_id": session_id, "mode": mode,
                            "unattended": document_id is not None})
        return session

    async def request_mode(self, session: LiveSession, mode: Mode, user: str) -> None:
        """Ask the agent to switch view/control; the device user must consent again."""
        if session.machine.state is not SessionState.STREAMING:
            raise ApiError(409, "not_streaming", "the session is not streaming")
        if mode == "control":
            await refuse_control_if_view_only(self.db, session.device_id)
        session.machine.request_mode(mode, self._clock())
        await audit.append(self.db, f"user:{user}", "session.mode_requested", session.device_id,
                           {"session_id": session.session_id, "mode": mode})
        conn = self.connections.get(session.device_id)
        if conn is None:
            raise ApiError(409, "device_offline", "the device is not connected")
        await conn.send(SessionMode(session_id=session.session_id, mode=mode, reason="technician request"))

    # --- the agent answers and ends -------------------------------------------------------

    async def on_answer(self, conn: AgentConnection, msg: SessionAnswer) -> None:
        session = self.live.get(msg.session_id)
        if session is None or session.device_id != conn.device_id:
            await conn.reply_error("unknown_session", "no such session for this device", msg.id)
            return
        machine = session.machine
        if machine.state is SessionState.STREAMING and machine.pending_mode is not None:
            await self._mode_answer(session, msg)
            return
        now = self._clock()
        try:
            machine.answer(accepted=msg.accepted, mode_granted=msg.mode_granted if msg.accepted else None,
                           by=msg.by, now=now)
        except LocalProtocolError as exc:  # an answer the table does not allow (late, twice, control for view)
            await conn.reply_error("unexpected", str(exc), msg.id)
            if msg.accepted:
                await self.finisher.finish(session, EndReason.ERROR.value, "server", detail=str(exc))
            return
        session.token.renew(now)
        await self._answered(session, msg)

    async def _answered(self, session: LiveSession, msg: SessionAnswer) -> None:
        machine, actor = session.machine, f"device:{session.device_id}"
        details = {"session_id": session.session_id, "by": msg.by, "reason": msg.reason}
        if machine.state is SessionState.CONSENTED:
            await audit.append(self.db, actor, "session.consented", session.device_id,
                               {**details, "mode": machine.mode, "requested_mode": machine.requested_mode,
                                "colleagues": msg.colleagues})
            if machine.mode == "control":
                await audit.append(self.db, actor, "session.control_enabled", session.device_id,
                                   {**details, "consented_by": _consented_by(session, msg.by), "upgrade": False})
            await repository.save_state(self.db, session, self._clock(), answered=True)
            session.notify()
            return
        timed_out = machine.state is SessionState.TIMED_OUT
        await audit.append(self.db, actor, "session.timed_out" if timed_out else "session.denied",
                           session.device_id, details)
        await repository.save_state(self.db, session, self._clock(), answered=True)
        reason = EndReason.TIMED_OUT.value if timed_out else (msg.reason or EndReason.DENIED.value)
        await self.finisher.finish(session, reason, "user" if msg.by in ("user", "timeout") else "agent",
                                   notify_agent=False)

    async def _mode_answer(self, session: LiveSession, msg: SessionAnswer) -> None:
        machine, now, actor = session.machine, self._clock(), f"device:{session.device_id}"
        # An upgrade's challenge, answered or not, is over with the device's answer.
        session.challenge, session.challenge_for = None, None
        details = {"session_id": session.session_id, "by": msg.by, "reason": msg.reason}
        if msg.accepted and msg.mode_granted is not None and msg.mode_granted == machine.pending_mode:
            machine.mode_consented(msg.mode_granted, now)
            await audit.append(self.db, actor, "session.control_enabled", session.device_id,
                               {**details, "consented_by": _consented_by(session, msg.by), "upgrade": True})
        else:
            machine.mode_refused(now)
            await audit.append(self.db, actor, "session.mode_refused", session.device_id, details)
        await repository.save_state(self.db, session, now)
        session.notify()

    async def on_agent_end(self, conn: AgentConnection, msg: SessionEnd) -> None:
        session = self.live.get(msg.session_id)
        if session is None or session.device_id != conn.device_id:
            # Already over here: the agent's late count of refused inputs is still recorded.
            if msg.refused_inputs and await repository.device_of(self.db, msg.session_id) == conn.device_id:
                await self.finisher.record_refusals(msg.session_id, conn.device_id, msg.refused_inputs)
            return
        session.refused_inputs = max(session.refused_inputs, msg.refused_inputs)
        await self.finisher.finish(session, msg.reason, "user" if msg.by == "user" else "agent", notify_agent=False)

    # --- unattended: the agent's challenge, the technician's proof ----------------------------

    async def on_challenge(self, conn: AgentConnection, msg: SessionChallenge) -> None:
        """The agent wants the technician's signature over its nonce: keep it for the session's view."""
        session = self.live.get(msg.session_id)
        if session is None or session.device_id != conn.device_id:
            await conn.reply_error("unknown_session", "no such session for this device", msg.id)
            return
        machine = session.machine
        offered = machine.state is SessionState.OFFERED and session.challenge is None
        # An upgrade of a session under a grant: the device asks a fresh proof for the mode asked for.
        upgrading = machine.state is SessionState.STREAMING and machine.pending_mode == msg.action
        # A join of a session under a grant: the joiner signs (one join at a time, see .teamwork).
        joining = machine.state is SessionState.STREAMING and len(session.people.joining) == 1 \
            and msg.action == "view" and not upgrading
        if not (offered or upgrading or joining) or session.document_id != msg.document_id:
            await conn.reply_error("unexpected", "no unattended offer or mode change of this document waits for a "
                                                 "challenge", msg.id)
            return
        session.challenge, session.proof_relayed = msg, False
        # Whom the challenge is for: a joiner, or after a hand-off the controller asking for another mode.
        people = session.people
        handed = people.controller if upgrading and people.controller != session.technician_user else None
        session.challenge_for = next(iter(people.joining)) if joining else handed
        await audit.append(self.db, f"device:{conn.device_id}", "session.challenge", conn.device_id,
                           {"session_id": session.session_id, "document_id": msg.document_id, "action": msg.action,
                            "expires_at": msg.expires_at})
        session.notify()

    async def relay_proof(self, session: LiveSession, proof: TechnicianProof, user: str) -> None:
        """Carry the technician's signed answer to the agent, unchanged; the agent alone checks it."""
        challenge, machine = session.challenge, session.machine
        joiner = session.challenge_for
        joining = machine.state is SessionState.STREAMING and joiner is not None and joiner in session.people.joining
        upgrading = machine.state is SessionState.STREAMING and machine.pending_mode is not None and not joining
        if challenge is None or not (machine.state is SessionState.OFFERED or upgrading or joining):
            raise ApiError(409, "no_challenge", "the device has not asked for a proof in this session (yet)")
        if session.proof_relayed:
            raise ApiError(409, "proof_sent", "a proof was already sent for this challenge")
        if self._clock() >= challenge.expires_at:
            raise ApiError(409, "challenge_expired", "the device's challenge has expired")
        conn = self.connections.get(session.device_id)
        if conn is None:
            raise ApiError(409, "device_offline", "the device is not connected")
        session.proof_relayed = True
        await audit.append(self.db, f"user:{user}", "session.proof_relayed", session.device_id,
                           {"session_id": session.session_id, "document_id": challenge.document_id,
                            "credential_id": proof.approval.credential_id})
        await conn.send(SessionProof(session_id=session.session_id, proof=proof))
        # Until the agent consented (or answered the mode change), or its refusal has been stored (the finish path
        # forgets the session last).
        deadline = time.monotonic() + PROOF_ANSWER_WAIT_S

        def waiting() -> bool:
            if joining:
                return joiner in session.people.joining
            if upgrading:
                return machine.pending_mode is not None and machine.state is SessionState.STREAMING
            return machine.state not in (SessionState.CONSENTED, SessionState.STREAMING)

        while waiting() and session.session_id in self.live and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.changed.wait(), deadline - time.monotonic())

    # --- the tunnel -----------------------------------------------------------------------

    async def claim_tunnel(self, session_id: str, presented: str, device_id: str, cert_serial: str) -> LiveSession:
        """Check and burn the tunnel token; ApiError 403 (audited) when it does not fit."""
        session = self.live.get(session_id)
        if session is None:
            raise await self._tunnel_refused(device_id, session_id,
                                             ApiError(403, "unknown_session", "no such live session"))
        refused = session.token.refusal(presented, device_id, cert_serial, self._clock())
        if refused is not None:
            raise await self._tunnel_refused(device_id, session_id, refused)
        deadline = time.monotonic() + ANSWER_WAIT_S
        while session.machine.state is SessionState.OFFERED and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.changed.wait(), deadline - time.monotonic())
        refused = session.token.spent_refusal(self._clock())
        if refused is None and session.machine.state is not SessionState.CONSENTED:
            refused = ApiError(403, "not_consented", f"session is {session.machine.state.value}, not consented")
        if refused is not None:
            raise await self._tunnel_refused(device_id, session_id, refused)
        session.token.used = True
        await repository.mark_token_used(self.db, session_id)
        return session

    async def _tunnel_refused(self, device_id: str, session_id: str, refusal: ApiError) -> ApiError:
        await audit.append(self.db, f"device:{device_id}", "session.tunnel_refused", session_id,
                           {"code": refusal.code, "message": refusal.message})
        return refusal

    async def started(self, session: LiveSession) -> None:
        """The agent's tunnel is attached: the session streams."""
        now = self._clock()
        session.machine.start(now)
        await repository.save_state(self.db, session, now, started=True)
        await audit.append(self.db, f"device:{session.device_id}", "session.started", session.device_id,
                           {"session_id": session.session_id, "mode": session.machine.mode})
        session.notify()

    def relay_for(self, session: LiveSession) -> Relay:
        """The session's relay, created by whichever side arrives first."""
        if session.relay is None:
            recorder = None
            if self.settings.record:
                recorder = Recorder(self.settings.recordings_dir / f"{session.session_id}.hlrec", {
                    "session_id": session.session_id, "device_id": session.device_id, "group": session.group,
                    "technician": session.technician_user, "requested_mode": session.machine.requested_mode,
                    "reason": session.reason, "document_id": session.document_id,
                    "started_at": self._clock()}, key=self.settings.seal_key)

            async def on_end(reason: str, by: str) -> None:
                await self.finisher.finish(session, reason, by)

            shell = ShellWatch(view_only=lambda: session.machine.mode != "control",
                               cast_path=self.settings.recordings_dir / f"{session.session_id}.cast"
                               if self.settings.record else None,
                               title=f"session {session.session_id} by {session.technician_user}",
                               on_shell=lambda kind, details: self._note_shell(session, kind, details),
                               idle_timeout_s=self.settings.shell_idle_timeout_s,
                               seal_key=self.settings.seal_key)

            session.relay = Relay(session.session_id, self.settings,
                                  view_only=lambda: session.machine.mode != "control",
                                  on_input_refused=lambda who: self._note_refused_input(session, who),
                                  on_end=on_end, controller=lambda: session.people.controller,
                                  on_leave=lambda who: self.on_viewer_gone(session, who),
                                  recorder=recorder, on_transfer=lambda m: self._note_transfer(session, m),
                                  on_clipboard=lambda d, t: self._note_clipboard(session, d, t),
                                  on_chat=lambda m: self._spawn(chat.save_line(self.db, session.session_id, m)),
                                  shell=shell)
            inbox = session.relay.queues["technician"]  # to the agent, behind what the technician sent

            async def to_agent(text: str) -> None:
                await inbox.put((False, text))

            shell.to_agent = to_agent  # the shell's idle hang-up (server.sessions.shell_relay)
        return session.relay

    def _note_shell(self, session: LiveSession, kind: str, details: dict[str, object]) -> None:
        """Audit the remote shell: started (as whom, which pty), ended (exit status), refused (why, by whom)."""
        self._spawn(audit.append(self.db, f"user:{session.technician_user}", f"session.shell_{kind}",
                                 session.device_id, {"session_id": session.session_id, **details}))

    def _note_clipboard(self, session: LiveSession, direction: str, text: str) -> None:
        """Audit clipboard text that crossed the relay by direction, length and SHA-256 (never the text)."""
        self._spawn(audit.append(self.db, f"user:{session.technician_user}", "session.clipboard", session.device_id,
                                 {"session_id": session.session_id, "direction": direction, "length": len(text),
                                  "sha256": hashlib.sha256(text.encode()).hexdigest()}))

    def _note_transfer(self, session: LiveSession, message: toolkit.FileDone | toolkit.FileEnd) -> None:
        """Audit a finished file transfer by name, size and SHA-256 (the device's report; never the content)."""
        to_device = isinstance(message, toolkit.FileDone)
        self._spawn(audit.append(self.db, f"user:{session.technician_user}",
                                 "session.file_sent" if to_device else "session.file_fetched", session.device_id,
                                 {"session_id": session.session_id, "name": message.name[:255],
                                  "size": message.size, "sha256": message.sha256}))

    def _note_refused_input(self, session: LiveSession, who: str) -> None:
        """The relay saw input on a view-only session (the agent refuses it too), or from a viewer who does not
        control: audit the first of each viewer."""
        if who not in session.refusals_audited:
            session.refusals_audited.add(who)
            why = "view-only session" if who == session.people.controller else "not the controlling technician"
            self._spawn(audit.append(self.db, f"user:{who}", "session.input_refused",
                                     session.device_id, {"session_id": session.session_id,
                                                         "why": why, "first": True}))

    async def on_viewer_gone(self, session: LiveSession, who: str) -> None:
        """A viewer's stream closed while others watch on: they left (``teamwork`` is set by :func:`setup`)."""
        if self.teamwork is not None and who in session.people.viewers:
            await self.teamwork.leave(session, who, stream_closed=True)

    # --- the clock and revocations --------------------------------------------------------

    async def _watch_deadlines(self, session: LiveSession) -> None:
        """Feed the clock to the machine: no answer in time, or no tunnel in time, ends the session."""
        machine = session.machine
        while machine.live and not session.finished:
            deadline = machine.next_deadline()
            changed = session.changed
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
            if not machine.tick(self._clock()):
                continue
            if machine.state is SessionState.TIMED_OUT:
                await audit.append(self.db, "server", "session.timed_out", session.device_id,
                                   {"session_id": session.session_id, "by": "server",
                                    "reason": "the agent did not answer"})
                await self.finisher.finish(session, EndReason.TIMED_OUT.value, "server")
            else:  # the machine ended itself: the tunnel never came
                await self.finisher.finish(session, machine.end_reason, machine.ended_by)

    async def on_device_revoked(self, device_id: str, _payload: dict[str, Any]) -> None:
        """A revoked device loses its sessions too (its control channel is closed elsewhere)."""
        for session in list(self.live.values()):
            if session.device_id == device_id:
                await self.finisher.finish(session, "device revoked", "server")


def _offered(conn: AgentConnection, capability: str) -> bool | msgspec.UnsetType:
    """A ``session.offer`` flag for what every viewer of this server reads (lean JPEGs, batched updates): True
    where the agent's hello names ``capability`` (it reads the field), else left out of the offer (agents without
    it refuse unknown fields)."""
    if conn.hello is not None and capability in conn.hello.capabilities:
        return True
    return msgspec.UNSET


def _consented_by(session: LiveSession, by: str) -> str:
    """Who agreed to control, for the audit record: the device user, a named grant, or the device policy."""
    if by == "user":
        return "device user"
    if by == "grant":
        return f"grant document {session.document_id} and the technician's proof"
    return by
