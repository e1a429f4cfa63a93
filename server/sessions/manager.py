"""Live sessions on this node: offers, answers, tunnel tokens, ends — all audited.

Each session has a :class:`~protocol.session.SessionMachine` (the transition table),
a row in ``sessions`` and up to two websockets (technician, agent) that the relay pairs.
The tunnel token is random (256 bits), stored only as a SHA-256 hash, single-use, valid
60 s, and bound to the serial of the device certificate the offer went to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from certs.pki import certificate_serial_hex
from common.hashing import hash_secret, verify_secret
from protocol.errors import LocalProtocolError
from protocol.session import (
    TUNNEL_TOKEN_LIFE_S,
    EndReason,
    Mode,
    SessionAnswer,
    SessionEnd,
    SessionMachine,
    SessionMode,
    SessionOffer,
    SessionState,
)

from .. import audit, devices
from ..grants import store as grant_store
from .settings import SessionSettings

if TYPE_CHECKING:
    from ..agent_channel import AgentConnection
    from ..app import HelplineServer
    from .relay import Relay

log = logging.getLogger(__name__)


class SessionRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class LiveSession:
    session_id: str
    device_id: str
    group: str
    technician_user: str
    technician_user_id: str
    technician_role: str
    grant_id: str | None
    reason: str
    machine: SessionMachine
    token_hash: str
    cert_serial: str
    token_expires_at: float
    token_used: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    relay: Relay | None = None
    refused_inputs: int = 0
    input_refusal_audited: bool = False

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def describe(self) -> dict[str, Any]:
        m = self.machine
        return {
            "session_id": self.session_id, "device_id": self.device_id, "group": self.group,
            "technician": self.technician_user, "requested_mode": m.requested_mode, "mode": m.mode,
            "pending_mode": m.pending_mode, "state": m.state.value, "reason": self.reason,
            "grant_id": self.grant_id, "answered_by": m.answered_by or None, "end_reason": m.end_reason or None,
            "ended_by": m.ended_by or None, "created_at": m.created_at,
            "stream_url": f"/api/v1/sessions/{self.session_id}/stream",
        }


class SessionManager:
    def __init__(self, server: HelplineServer) -> None:
        self.server = server
        self.settings = SessionSettings.from_config(server.config)
        self.live: dict[str, LiveSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def install(self) -> None:
        server = self.server
        server.agent_handlers.register(SessionAnswer, self.on_answer)
        server.agent_handlers.register(SessionEnd, self.on_agent_end)

        async def register_watcher() -> None:
            assert server.watcher is not None
            server.watcher.on(grant_store.GRANT_CHANGED, self._on_grant_changed)
            server.watcher.on(devices.DEVICE_REVOKED, self._on_device_revoked)

        server.background.append(register_watcher)

    @property
    def db(self) -> Any:
        return self.server.db

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- request ------------------------------------------------------------------------

    async def request(self, *, device_id: str, group: str, user: str, user_id: str, role: str, mode: Mode,
                      reason: str, grant_id: str | None) -> LiveSession:
        """Create the session and send the offer; raises SessionRefused when it cannot be offered."""
        if grant_id is not None:
            row = await grant_store.get(self.db, grant_id)
            if row is None or row["status"] != "active" or not grant_store.covers(row, device_id, group):
                raise SessionRefused(409, "grant_unusable", f"grant {grant_id} is not active for this device")
        conn = self.server.connections.get(device_id)
        if conn is None:
            raise SessionRefused(409, "device_offline", "the device is not connected")
        now = time.time()
        session_id = "s-" + secrets.token_hex(10)
        token = secrets.token_urlsafe(32)
        machine = SessionMachine(session_id, mode, created_at=now)
        session = LiveSession(session_id, device_id, group, user, user_id, role, grant_id, reason, machine,
                              hash_secret(token), certificate_serial_hex(conn.certificate), now + TUNNEL_TOKEN_LIFE_S)
        actor = f"user:{user}"
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO sessions (id, device_id, group_name, technician_user, technician_name, technician_role,"
                " requested_mode, reason, grant_id, state, token_hash, token_cert_serial, token_expires_at,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, device_id, group, user, user, role, mode, reason, grant_id, "requested",
                 session.token_hash, session.cert_serial, session.token_expires_at, now),
            )
            await audit.append_in(tx, actor, "session.requested", device_id,
                                  {"session_id": session_id, "mode": mode, "reason": reason, "grant_id": grant_id})
        self.live[session_id] = session
        machine.offer(time.time())
        await conn.send(SessionOffer(session_id=session_id, technician=user, technician_user=user,
                                     technician_role=role, mode=mode, reason=reason[:256], tunnel_token=token,
                                     grant_id=grant_id))
        await self._persist(session)
        await audit.append(self.db, "server", "session.offered", device_id,
                           {"session_id": session_id, "mode": mode, "unattended": grant_id is not None})
        self._spawn(self._watch_deadlines(session))
        return session

    # --- agent messages -----------------------------------------------------------------

    async def on_answer(self, conn: AgentConnection, msg: SessionAnswer) -> None:
        session = self.live.get(msg.session_id)
        if session is None or session.device_id != conn.device_id:
            await conn.reply_error("unknown_session", "no such session for this device", msg.id)
            return
        machine, now = session.machine, time.time()
        actor = f"device:{conn.device_id}"
        try:
            if machine.state is SessionState.OFFERED:
                machine.answer(accepted=msg.accepted, mode_granted=msg.mode_granted if msg.accepted else None,
                               by=msg.by, now=now)
            elif machine.state is SessionState.STREAMING and machine.pending_mode is not None:
                await self._mode_answer(session, msg, actor)
                return
            else:
                raise LocalProtocolError(f"answer in state {machine.state.value}")
        except LocalProtocolError as exc:
            await conn.reply_error("unexpected", str(exc), msg.id)
            if msg.accepted:
                await self.end(session, EndReason.ERROR.value, "server", detail=str(exc))
            return
        session.token_expires_at = now + TUNNEL_TOKEN_LIFE_S
        details = {"session_id": session.session_id, "by": msg.by, "reason": msg.reason}
        state = _state_of(machine)
        if state is SessionState.CONSENTED:
            await audit.append(self.db, actor, "session.consented", session.device_id,
                               {**details, "mode": machine.mode, "requested_mode": machine.requested_mode})
            if machine.mode == "control":
                await audit.append(self.db, actor, "session.control_enabled", session.device_id,
                                   {**details, "consented_by": _consented_by(session, msg.by), "upgrade": False})
            await self._persist(session, answered=True)
            session.notify()
            return
        action = "session.timed_out" if state is SessionState.TIMED_OUT else "session.denied"
        await audit.append(self.db, actor, action, session.device_id, details)
        await self._persist(session, answered=True)
        reason = {"session.timed_out": EndReason.TIMED_OUT.value}.get(action, msg.reason or EndReason.DENIED.value)
        await self.end(session, reason, "user" if msg.by in ("user", "timeout") else "agent", notify_agent=False)

    async def _mode_answer(self, session: LiveSession, msg: SessionAnswer, actor: str) -> None:
        machine, now = session.machine, time.time()
        details = {"session_id": session.session_id, "by": msg.by, "reason": msg.reason}
        if msg.accepted and msg.mode_granted is not None and msg.mode_granted == machine.pending_mode:
            machine.mode_consented(msg.mode_granted, now)
            await audit.append(self.db, actor, "session.control_enabled", session.device_id,
                               {**details, "consented_by": _consented_by(session, msg.by), "upgrade": True})
        else:
            machine.mode_refused(now)
            await audit.append(self.db, actor, "session.mode_refused", session.device_id, details)
        await self._persist(session)
        session.notify()

    async def on_agent_end(self, conn: AgentConnection, msg: SessionEnd) -> None:
        session = self.live.get(msg.session_id)
        if session is None or session.device_id != conn.device_id:
            row = await self.db.fetchone("SELECT device_id FROM sessions WHERE id = ?", (msg.session_id,))
            if row is not None and row["device_id"] == conn.device_id and msg.refused_inputs:
                await self._record_refusals(msg.session_id, conn.device_id, msg.refused_inputs)
            return
        session.refused_inputs = max(session.refused_inputs, msg.refused_inputs)
        await self.end(session, msg.reason, "user" if msg.by == "user" else "agent", notify_agent=False)

    async def _record_refusals(self, session_id: str, device_id: str, count: int) -> None:
        await self.db.execute("UPDATE sessions SET refused_inputs = ? WHERE id = ?", (count, session_id))
        await audit.append(self.db, f"device:{device_id}", "session.input_refused", device_id,
                           {"session_id": session_id, "count": count, "why": "view-only session"})

    # --- technician actions -------------------------------------------------------------

    async def request_mode(self, session: LiveSession, mode: Mode, user: str) -> None:
        if session.machine.state is not SessionState.STREAMING:
            raise SessionRefused(409, "not_streaming", "the session is not streaming")
        session.machine.request_mode(mode, time.time())
        await audit.append(self.db, f"user:{user}", "session.mode_requested", session.device_id,
                           {"session_id": session.session_id, "mode": mode})
        conn = self.server.connections.get(session.device_id)
        if conn is None:
            raise SessionRefused(409, "device_offline", "the device is not connected")
        await conn.send(SessionMode(session_id=session.session_id, mode=mode, reason="technician request"))

    def note_refused_input(self, session: LiveSession) -> None:
        """The relay saw input from the technician on a view-only session (the agent refuses it)."""
        if not session.input_refusal_audited:
            session.input_refusal_audited = True
            self._spawn(audit.append(self.db, f"user:{session.technician_user}", "session.input_refused",
                                     session.device_id, {"session_id": session.session_id,
                                                         "why": "view-only session", "first": True}))

    def relay_for(self, session: LiveSession) -> Relay:
        """The session's relay, created by whichever side arrives first."""
        from .relay import Recorder, Relay

        if session.relay is None:
            recorder = None
            if self.settings.record:
                recorder = Recorder(self.settings.recordings_dir / f"{session.session_id}.hlrec", {
                    "session_id": session.session_id, "device_id": session.device_id, "group": session.group,
                    "technician": session.technician_user, "requested_mode": session.machine.requested_mode,
                    "reason": session.reason, "grant_id": session.grant_id, "started_at": time.time()})

            async def on_end(reason: str, by: str) -> None:
                await self.end(session, reason, by)

            session.relay = Relay(session.session_id, self.settings,
                                  view_only=lambda: session.machine.mode != "control",
                                  on_input_refused=lambda: self.note_refused_input(session), on_end=on_end,
                                  recorder=recorder)
        return session.relay

    # --- tunnel tokens ------------------------------------------------------------------

    async def claim_tunnel(self, session_id: str, token: str, device_id: str, cert_serial: str) -> LiveSession:
        """Validate and burn the token; raises SessionRefused (and audits) when it does not fit."""
        session = self.live.get(session_id)

        async def refuse(code: str, message: str) -> SessionRefused:
            await audit.append(self.db, f"device:{device_id}", "session.tunnel_refused", session_id,
                               {"code": code, "message": message})
            return SessionRefused(403, code, message)

        if session is None:
            raise await refuse("unknown_session", "no such live session")
        if session.device_id != device_id or session.cert_serial != cert_serial:
            raise await refuse("foreign_token", "this session was offered to another device certificate")
        if not verify_secret(token, session.token_hash):
            raise await refuse("bad_token", "tunnel token does not match")
        if session.token_used:
            raise await refuse("token_used", "tunnel token already used")
        if time.time() > session.token_expires_at:
            raise await refuse("token_expired", "tunnel token expired")
        # The answer travels on the control channel: give it a moment to arrive first.
        deadline = time.monotonic() + 5.0
        while session.machine.state is SessionState.OFFERED and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.changed.wait(), deadline - time.monotonic())
        if session.token_used:
            raise await refuse("token_used", "tunnel token already used")
        if session.machine.state is not SessionState.CONSENTED:
            raise await refuse("not_consented", f"session is {session.machine.state.value}, not consented")
        session.token_used = True
        await self.db.execute("UPDATE sessions SET token_used = 1 WHERE id = ?", (session_id,))
        return session

    async def started(self, session: LiveSession) -> None:
        session.machine.start(time.time())
        await self._persist(session, started=True)
        await audit.append(self.db, f"device:{session.device_id}", "session.started", session.device_id,
                           {"session_id": session.session_id, "mode": session.machine.mode})
        session.notify()

    # --- ending -------------------------------------------------------------------------

    async def end(self, session: LiveSession, reason: str, by: str, *, notify_agent: bool = True,
                  detail: str = "") -> bool:
        """End once: state, row, audit, tell the agent, close both websockets."""
        if not session.machine.end(reason, by, time.time()):
            return False
        relay = session.relay
        await self._persist(session, ended=True, relay=relay)
        details: dict[str, Any] = {"session_id": session.session_id, "reason": reason, "by": by}
        if relay is not None:
            details |= {"bytes_to_technician": relay.bytes_to_technician, "bytes_to_agent": relay.bytes_to_agent}
        if detail:
            details["detail"] = detail
        actor = f"user:{session.technician_user}" if by == "technician" else (
            f"device:{session.device_id}" if by in ("user", "agent") else "server")
        await audit.append(self.db, actor, "session.ended", session.device_id, details)
        if session.refused_inputs:
            await self._record_refusals(session.session_id, session.device_id, session.refused_inputs)
        if notify_agent:
            conn = self.server.connections.get(session.device_id)
            if conn is not None:
                try:
                    await conn.send(SessionEnd(session_id=session.session_id, reason=reason[:256],
                                               by="technician" if by == "technician" else "server"))
                except Exception:
                    log.exception("could not tell the agent the session ended",
                                  extra={"session_id": session.session_id})
        if relay is not None:
            await relay.close(reason)
        session.notify()
        self.live.pop(session.session_id, None)
        return True

    async def _watch_deadlines(self, session: LiveSession) -> None:
        while session.machine.live:
            deadline = session.machine.next_deadline()
            changed = session.changed
            timeout = None if deadline is None else max(0.0, deadline - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
            if session.machine.tick(time.time()):
                if session.machine.state is SessionState.TIMED_OUT:
                    await audit.append(self.db, "server", "session.timed_out", session.device_id,
                                       {"session_id": session.session_id, "by": "server",
                                        "reason": "the agent did not answer"})
                    await self.end(session, EndReason.TIMED_OUT.value, "server")
                else:  # CONSENTED → ENDED: the tunnel never came
                    machine = session.machine
                    machine_reason = machine.end_reason
                    await self._persist(session, ended=True)
                    await audit.append(self.db, "server", "session.ended", session.device_id,
                                       {"session_id": session.session_id, "reason": machine_reason, "by": "server"})
                    if session.relay is not None:
                        await session.relay.close(machine_reason)
                    self.live.pop(session.session_id, None)
                    session.notify()

    async def _on_grant_changed(self, grant_id: str, payload: dict[str, Any]) -> None:
        if payload.get("status") != "revoked":
            return
        for session in list(self.live.values()):
            if session.grant_id == grant_id:
                await self.end(session, EndReason.GRANT_REVOKED.value, "server")

    async def _on_device_revoked(self, device_id: str, _payload: dict[str, Any]) -> None:
        """A revoked device loses its sessions too (its control channel is closed elsewhere)."""
        for session in list(self.live.values()):
            if session.device_id == device_id:
                await self.end(session, "device revoked", "server")

    async def _persist(self, session: LiveSession, *, answered: bool = False, started: bool = False,
                       ended: bool = False, relay: Relay | None = None) -> None:
        m, now = session.machine, time.time()
        sets = ["state = ?", "mode = ?"]
        params: list[Any] = [m.state.value, m.mode]
        if answered:
            sets += ["answered_at = ?", "answered_by = ?"]
            params += [now, m.answered_by]
        if started:
            sets.append("started_at = ?")
            params.append(now)
        if ended:
            sets += ["ended_at = ?", "end_reason = ?", "ended_by = ?"]
            params += [now, m.end_reason, m.ended_by]
        if relay is not None:
            sets += ["bytes_to_technician = ?", "bytes_to_agent = ?", "recording_path = ?"]
            params += [relay.bytes_to_technician, relay.bytes_to_agent,
                       str(relay.recording_path) if relay.recording_path else None]
        params.append(session.session_id)
        await self.db.execute(f"UPDATE sessions SET {', '.join(sets)} WHERE id = ?", params)  # noqa: S608


def _consented_by(session: LiveSession, by: str) -> str:
    """Who agreed to control, for the audit record: the device user, a named grant, or the device policy."""
    if by == "user":
        return "device user"
    if by == "grant":
        return f"grant {session.grant_id}"
    return by


def _state_of(machine: SessionMachine) -> SessionState:
    """The machine's state, read afresh (after a verb changed it)."""
    return machine.state


SESSIONS: web.AppKey[SessionManager] = web.AppKey("helpline_sessions", SessionManager)


def describe_row(row: dict[str, Any]) -> dict[str, Any]:
    """A stored (possibly finished) session for the API."""
    return {
        "session_id": row["id"], "device_id": row["device_id"], "group": row["group_name"],
        "technician": row["technician_user"], "requested_mode": row["requested_mode"], "mode": row["mode"],
        "pending_mode": None, "state": row["state"], "reason": row["reason"], "grant_id": row["grant_id"],
        "answered_by": row["answered_by"], "end_reason": row["end_reason"], "ended_by": row["ended_by"],
        "created_at": row["created_at"], "started_at": row["started_at"], "ended_at": row["ended_at"],
        "bytes_to_technician": row["bytes_to_technician"], "bytes_to_agent": row["bytes_to_agent"],
        "refused_inputs": row["refused_inputs"], "recording": row["recording_path"] is not None,
        "stream_url": f"/api/v1/sessions/{row['id']}/stream",
    }
