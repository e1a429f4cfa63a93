"""Remote sessions on the agent: consent or grant, then the tunnel, then the screen.

The agent, not the server, decides. For each ``session.offer``, and again for each
``session.mode`` upgrade, it applies one rule (:mod:`agent.consent.decision`): the device
admin's local policy (:mod:`agent.policy`), the approver-signed grant document when the
request names one (verified by the device's :class:`~agent.authority.AuthorityStore`), and the
user's answer on the consent prompt. Unattended, the technician must also prove who they are:
the agent sends ``session.challenge`` (a fresh nonce, valid ``proof_timeout_s``) and starts
only when the ``session.proof`` that comes back carries the signature of a technician the
grant names (answered by "grant"); every unattended decision goes to the device audit log.
An upgrade (view → control) of a session under a grant is decided the same way for the new
mode — the grant must allow control and the technician signs a fresh challenge — and is
audited as ``session.upgrade``; an attended session's upgrade asks the user again.
Only after an Allow does it open the tunnel ``wss://…/agent/tunnel/{session_id}`` (mTLS
with the device certificate plus the single-use tunnel token) and run the screen session
in exactly the consented mode. While it runs, the indicator stays on screen; the session
ends on *End session*, on the technician's or server's ``session.end``, when the tunnel
closes, when its grant is revoked, withdrawn or no longer verifies, or its window/validity
ends (checked against the wall clock at least every ``deadline_check_s``, so a
suspend/resume or a clock change cannot stretch a grant).
Every end is reported with ``session.end``.

A running session belongs to the session manager, not to the control connection: the
tunnel is its own mutually-authenticated websocket, and the server can end the session
at any time by closing it. So a control-channel reconnect (certificate renewal, a
network blip) does not end it; only a control channel that stays down longer than
``reconnect_grace_s`` does (reason ``agent disconnected``).

Attended sessions need somebody to ask: no display, or nobody logged in
(:func:`logged_in_users`), is a refusal with that reason before any prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
from websockets.asyncio.client import ClientConnection, connect

from common.files import safe_name
from common.proxy import websocket_proxy
from protocol import stream
from protocol.authority import TechnicianProof, UnattendedGrant
from protocol.authority_messages import SessionChallenge, SessionProof
from protocol.session import (
    MAX_PEOPLE,
    TUNNEL_TOKEN_HEADER,
    AnsweredBy,
    EndReason,
    Mode,
    SessionAnswer,
    SessionEnd,
    SessionJoin,
    SessionJoinAnswer,
    SessionMachine,
    SessionMode,
    SessionOffer,
    SessionPeople,
    SessionPeopleApplied,
    parse_viewer_mark,
)
from protocol.stream import MAX_PAYLOAD

from .authority import AuthorityStore
from .authority.scope import grant_deadline
from .clock import Clock, SystemClock
from .consent import ConsentUI, ConsentUnavailable, Indicator, IndicatorInfo, PromptRequest
from .consent.decision import ConsentDecision, ConsentRequest, DocumentFacts, Verdict, deny, effective_mode
from .consent.decision import decide as decide_consent
from .control_client import AgentClient
from .policy import LocalPolicy
from .screen_runner import ScreenRunner, run_in_process
from .toolkit.caps import decide_caps
from .ws_batch import send_frames

log = logging.getLogger(__name__)

#: How long the agent waits for the tunnel websocket to open.
TUNNEL_OPEN_TIMEOUT_S = 15.0
#: After reporting an end, how long the agent lets the server close the tunnel first.
REPORT_GRACE_S = 0.5
#: How long an accepted upgrade may take to restart the screen session in the new mode.
MODE_SWITCH_TIMEOUT_S = 10.0
#: Grant validity/window is re-checked against the wall clock at least this often.
DEADLINE_CHECK_S = 1.0
#: Running sessions survive a control-channel outage this long (then they end).
RECONNECT_GRACE_S = 30.0
#: Tests (and kiosks without utmp) may name the logged-in users: comma-separated, "" = nobody.
USERS_ENV = "HELPLINE_LOGGED_IN_USERS"
#: How long the technician has to sign an unattended session's challenge (AgentConfig overrides it).
PROOF_TIMEOUT_S = 60.0


def logged_in_users(session_user: str | None = None) -> list[str]:
    """Names of users with a login session (utmp via psutil), or the ``HELPLINE_LOGGED_IN_USERS`` override,
    plus ``session_user`` (``AgentConfig.session_user``: a display nobody logs in to, like the demo's Xvfb)."""
    assumed = {session_user} if session_user else set()
    override = os.environ.get(USERS_ENV)
    if override is not None:
        return sorted({name.strip() for name in override.split(",") if name.strip()} | assumed)
    try:
        return sorted({user.name for user in psutil.users()} | assumed)
    except OSError as exc:
        log.warning("cannot list logged-in users; treating the device as unattended: %s", exc)
        return sorted(assumed)


@dataclass
class RunningSession:
    offer: SessionOffer
    mode: Mode
    #: The approver-signed grant it runs under (unattended), re-checked while it runs.
    grant: UnattendedGrant | None
    machine: SessionMachine
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set each time the screen session restarts in a new mode (after an upgrade).
    mode_applied: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: str = ""
    ended_by: str = ""
    upgrade_to: Mode | None = None
    end_reported: bool = False
    #: Who the indicator names: the verified technician when a proof was checked, else the server's word.
    technician: str = ""
    #: The user allowed "my helpdesk may bring colleagues" at the first prompt: joins need no new question.
    colleagues: bool = False
    #: Join and hand-off: technicians this device admitted (the requester, and joiners it said yes to), those
    #: watching now, and the one whose input is taken (None: nobody, everyone only watches).
    admitted: set[str] = field(default_factory=set)
    viewers: list[str] = field(default_factory=list)
    controller: str | None = None
    indicator: Indicator | None = None
    #: Input refused because its sender does not control (counted into the session's refused inputs).
    refused_not_controller: int = 0

    @property
    def controlling(self) -> str | None:
        """Whose input and changes this device takes: the requester until a hand-off this device admitted;
        None once the controller left without handing over."""
        return self.controller if self.controller in self.admitted else None

    def request_end(self, reason: str, by: str) -> None:
        if not self.end_reason:
            self.end_reason, self.ended_by = reason, by
        self.wake.set()


class AgentSessions:
    """Per-agent session manager, given its seams (consent UI, clock, display, who is logged in).

    Built and attached (:func:`attach`) by :mod:`agent.runtime`; the seams stay attributes so a
    test may swap one after construction.
    """

    def __init__(self, client: AgentClient, *, ui: ConsentUI, clock: Clock | None = None,
                 display: str | None = None, logged_in: Callable[[], list[str]] | None = None,
                 authority: AuthorityStore | None = None) -> None:
        self.client = client
        #: The device's verified authority (None: no unattended session is honoured).
        self.authority = authority
        self.proof_timeout_s = client.config.unattended_proof_timeout_s
        #: Unattended offers waiting for the technician's proof, by session id.
        self._proofs: dict[str, asyncio.Future[TechnicianProof]] = {}
        #: The X display prompts, the indicator and the screen session use (None: nobody can be asked).
        self.display = display
        self.ui = ui
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.logged_in: Callable[[], list[str]] = logged_in or (lambda: logged_in_users(client.config.session_user))
        self.deadline_check_s = DEADLINE_CHECK_S
        self.reconnect_grace_s = RECONNECT_GRACE_S
        self._tasks: set[asyncio.Task[None]] = set()
        self._grace: asyncio.Task[None] | None = None
        self.screen_kwargs: dict[str, Any] = {}
        #: Runs the screen: here on ``display``, or (desktop = "helper") in the consenting user's session helper.
        self.screen_runner: ScreenRunner = run_in_process
        #: When set (the desktop broker), says why nobody can be asked instead of ``display``/``logged_in``.
        self.asker: Callable[[], str] | None = None
        self.running: dict[str, RunningSession] = {}
        self.pending: dict[str, asyncio.Task[None]] = {}
        #: Bytes the agent sent on each session's tunnel (tests check denied sessions send none).
        self.tunnel_bytes: dict[str, int] = {}
        self.finished: dict[str, str] = {}
        self._refused: dict[str, int] = {}
        #: Technician (username) → wall time the user last declined them: the cooldown's input.
        self.declined: dict[str, float] = {}
        #: Offers whose user ticked "my helpdesk may bring colleagues" (until the session starts).
        self._colleagues: set[str] = set()

    # --- seams --------------------------------------------------------------------------

    def policy(self) -> LocalPolicy:
        return LocalPolicy.load(self.client.config.policy_file)

    def group(self) -> str:
        return str(self.client.state.load_info().get("group", ""))

    def nobody_to_ask(self) -> str:
        """Why no consent prompt can be shown here ("" when someone can be asked)."""
        if self.asker is not None:
            return self.asker()
        if not self.display and not os.environ.get("WAYLAND_DISPLAY"):  # Wayland without X: zenity's windows
            return "no display to show the consent prompt on"
        if not self.logged_in():
            return "nobody is logged in to ask for consent"
        return ""

    def _own(self, coro: Any) -> asyncio.Task[None]:
        """Run a task owned by the manager (it outlives control-channel reconnects)."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if isinstance(exc, ConnectionError):  # e.g. a session's end reported while the agent shuts down
            log.info("session task ended with the control connection: %s", exc)
            return
        log.error("session task failed", exc_info=exc)

    # --- control channel presence -------------------------------------------------------

    async def on_ready(self, client: AgentClient) -> None:
        """Per connection: cancel a pending grace timer; when the connection drops, start one."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        try:
            await asyncio.Future()  # lives exactly as long as this connection
        finally:
            if self.running:
                log.info("control channel lost; running sessions continue on their tunnels",
                         extra={"grace_s": self.reconnect_grace_s, "sessions": list(self.running)})
                self._grace = self._own(self._grace_timer())

    async def _grace_timer(self) -> None:
        await asyncio.sleep(self.reconnect_grace_s)
        if not self.client.ready.is_set():
            for running in self.running.values():
                running.request_end(EndReason.AGENT_GONE.value, "agent")

    async def shutdown(self, reason: str = EndReason.AGENT_GONE.value) -> None:
        """End every running session now (the agent is stopping) and wait until they are closed."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        for running in self.running.values():
            running.request_end(reason, "agent")
        for task in self.pending.values():
            task.cancel()
        await asyncio.gather(*self._tasks, *self.pending.values(), return_exceptions=True)

    # --- message handlers ---------------------------------------------------------------

    async def on_offer(self, client: AgentClient, offer: SessionOffer) -> None:
        if offer.session_id in self.pending or offer.session_id in self.running:
            log.warning("duplicate session offer ignored", extra={"session_id": offer.session_id})
            return
        task = asyncio.ensure_future(self._handle_offer(offer))
        self.pending[offer.session_id] = task
        task.add_done_callback(lambda _t: self.pending.pop(offer.session_id, None))
        client.spawn(task)

    async def on_end(self, client: AgentClient, message: SessionEnd) -> None:
        running = self.running.get(message.session_id)
        if running is not None:
            running.request_end(message.reason, message.by)
            return
        task = self.pending.get(message.session_id)
        if task is not None:
            log.info("session withdrawn before it started", extra={"session_id": message.session_id})
            task.cancel()

    async def on_mode(self, client: AgentClient, message: SessionMode) -> None:
        running = self.running.get(message.session_id)
        if running is None:
            return
        client.spawn(self._handle_upgrade(running, message))

    def _end_revoked(self) -> None:
        for running in self.running.values():
            if running.grant is not None:
                reason = self.grant_over(running.grant)
                if reason:
                    running.request_end(reason, "agent")

    async def on_authority_changed(self) -> None:
        """What the device honours changed (a revocation, a withdrawal): end sessions whose grant no longer holds."""
        self._end_revoked()

    async def on_proof(self, client: AgentClient, message: SessionProof) -> None:
        waiting = self._proofs.get(message.session_id)
        if waiting is None or waiting.done():
            log.warning("session.proof for no pending challenge ignored", extra={"session_id": message.session_id})
            return
        waiting.set_result(message.proof)

    # --- join and hand-off ---------------------------------------------------------------

    async def on_join(self, client: AgentClient, message: SessionJoin) -> None:
        client.spawn(self._handle_join(message))

    async def _handle_join(self, message: SessionJoin) -> None:
        """Another technician asks to watch: the user decides (a new question naming them) unless they allowed
        colleagues at the first prompt; in an unattended session the grant must name the joiner, who proves who they
        are by signing a fresh challenge, as the first technician did."""
        running = self.running.get(message.session_id)
        who = message.technician
        by: AnsweredBy = "policy"
        who_verified = ""
        if running is None or running.end_reason:
            accepted, reason = False, "no such running session"
        elif len(running.admitted) >= MAX_PEOPLE:
            accepted, reason = False, f"at most {MAX_PEOPLE} technicians per session"
        elif running.grant is not None:
            # Unattended: the same rule as the first technician's — the grant must name the joiner (for view) and
            # the joiner must sign a fresh challenge of this device; the policy may still require a prompt.
            decision = await self._consent(ConsentRequest(
                session_id=message.session_id, technician=who, technician_user=who,
                technician_role=message.technician_role, mode="view", reason=message.reason,
                document_id=running.grant.grant_id), self.policy(), join=True)
            accepted, by, reason = decision.accepted, decision.by, decision.reason
            who_verified = decision.verified_technician
        elif running.colleagues:
            accepted, by, reason = True, "user", "the user allowed colleagues at the first prompt"
        elif self.nobody_to_ask():
            accepted, reason = False, self.nobody_to_ask()
        else:
            policy = self.policy()
            # The prompt guard is up while it shows: the controlling technician's input waits, it cannot answer.
            answer = await self.ui.prompt(PromptRequest(
                technician=who, mode="view", reason=message.reason, timeout_s=policy.prompt_timeout_s,
                note=f"Invited by {message.invited_by}; {running.controller or 'nobody'} keeps control. "
                     f"{who} would only watch.", session_id=message.session_id, join=True))
            accepted, by, reason = answer.allowed, answer.by, answer.reason
        if accepted and running is not None and not running.end_reason:
            running.admitted.add(who)
        else:
            accepted = False
        self._device_audit("session.join", session_id=message.session_id, technician=who, accepted=accepted,
                           by=by, reason=reason, invited_by=message.invited_by,
                           verified_technician=who_verified or None)
        await self.client.send(SessionJoinAnswer(session_id=message.session_id, technician=who, accepted=accepted,
                                                 by=by, reason=reason[:256]))

    async def on_people(self, client: AgentClient, message: SessionPeople) -> None:
        """The server's roster after a join, leave or hand-off: applied only if it names admitted technicians."""
        running = self.running.get(message.session_id)
        if running is None:
            return
        strangers = [name for name in message.viewers if name not in running.admitted]
        controller = message.controller
        if strangers or (controller is not None and controller not in message.viewers):
            reason = f"not admitted on this device: {', '.join(strangers or [str(controller)])}"
            self._device_audit("session.people_refused", session_id=message.session_id, reason=reason)
            await self.client.send(SessionPeopleApplied(session_id=message.session_id, accepted=False,
                                                        controller=running.controller, reason=reason[:256]))
            return
        previous = running.controller
        running.viewers, running.controller = list(message.viewers), controller
        for gone in running.admitted - set(message.viewers) - {running.offer.technician_user}:
            running.admitted.discard(gone)  # a joiner who left must be asked again to come back
        if previous != controller:
            self._device_audit("session.control_moved", session_id=message.session_id, previous=previous,
                               controller=controller)
        indicator = running.indicator
        set_people = getattr(indicator, "set_people", None)
        if set_people is not None:
            with contextlib.suppress(Exception):
                await set_people(tuple(running.viewers), controller)
        await self.client.send(SessionPeopleApplied(session_id=message.session_id, accepted=True,
                                                    controller=controller))

    def _device_audit(self, event: str, **details: Any) -> None:
        """The device's own audit log (where this agent keeps one)."""
        if self.authority is not None:
            self.authority.audit.record(event, **details)

    # --- decision -----------------------------------------------------------------------

    async def decide(self, offer: SessionOffer, policy: LocalPolicy) -> ConsentDecision:
        """Consent for a new session: local policy, then the signed grant and proof (if unattended), then the user."""
        return await self._consent(ConsentRequest(
            session_id=offer.session_id, technician=offer.technician, technician_user=offer.technician_user,
            technician_role=offer.technician_role, mode=offer.mode, reason=offer.reason,
            document_id=offer.document_id,
        ), policy)

    async def _consent(self, request: ConsentRequest, policy: LocalPolicy, *, join: bool = False) -> ConsentDecision:
        """The pure rule (:mod:`agent.consent.decision`) on this device's facts; the challenge and the prompt
        when it asks for them."""
        facts = self._document_facts(request, policy)
        decision = decide_consent(request, policy, document=facts, nobody_to_ask=self.nobody_to_ask(),
                                  declined_ago=self._declined_ago(request))
        if decision.verdict is Verdict.CHALLENGE:
            assert facts is not None and decision.grant is not None and decision.mode is not None
            facts = await self._challenge(request, decision.grant, decision.mode, facts)
            decision = decide_consent(request, policy, document=facts, nobody_to_ask=self.nobody_to_ask(),
                                      declined_ago=self._declined_ago(request))
        if decision.prompt is None:
            return decision
        prompt = decision.prompt
        if join:
            prompt = dataclasses.replace(prompt, join=True)
        elif not request.upgrade:  # the first prompt of a session offers "may bring colleagues"
            prompt = dataclasses.replace(prompt, colleagues_option=True)
        answer = await self.ui.prompt(prompt)
        if not answer.allowed and answer.by in ("user", "timeout"):
            self.declined[request.technician_user] = self.clock.wall()  # starts the cooldown
        if answer.allowed and answer.colleagues and not request.upgrade and not join:
            self._colleagues.add(request.session_id)
        return decision.answered(answer)

    def _declined_ago(self, request: ConsentRequest) -> float | None:
        """Seconds since the user declined this technician, or None (a clock set back restarts the count)."""
        at, now = self.declined.get(request.technician_user), self.clock.wall()
        if at is not None and now < at:
            self.declined[request.technician_user] = at = now
        return None if at is None else now - at

    def _document_facts(self, request: ConsentRequest, policy: LocalPolicy) -> DocumentFacts | None:
        """What the authority store says about the request's grant document, for the mode the policy allows."""
        if request.document_id is None:
            return None
        if self.authority is None:
            return DocumentFacts(None, "this agent holds no trust root")
        mode, _note = effective_mode(request, policy)
        check = self.authority.check_grant(request.document_id, action=mode, now=self.clock.wall(),
                                           local=self.clock.local())
        return DocumentFacts(check.grant, check.verdict.reason)

    async def _challenge(self, request: ConsentRequest, grant: UnattendedGrant, mode: Mode,
                         facts: DocumentFacts) -> DocumentFacts:
        """Send a fresh nonce for the technician to sign, wait for the proof, and verify it (one attempt)."""
        assert self.authority is not None
        nonce = secrets.token_urlsafe(32)
        expires_at = self.clock.wall() + self.proof_timeout_s
        waiting: asyncio.Future[TechnicianProof] = asyncio.get_running_loop().create_future()
        self._proofs[request.session_id] = waiting
        try:
            await self.client.send(SessionChallenge(session_id=request.session_id, nonce=nonce,
                                                    document_id=grant.grant_id, action=mode,
                                                    device_id=self.authority.device_id, expires_at=expires_at))
            proof = await asyncio.wait_for(waiting, self.proof_timeout_s)
        except TimeoutError:
            return DocumentFacts(grant, facts.reason, proof_problem=(
                f"no technician proof arrived within {self.proof_timeout_s:g} s"))
        finally:
            self._proofs.pop(request.session_id, None)  # the nonce is retired: one proof per challenge
        # The grant may have been revoked, or the revocation list gone stale, while the technician signed.
        again = self._document_facts(request, self.policy())
        if again is None or again.grant is None:
            return again or DocumentFacts(None, "the grant no longer holds")
        verdict = self.authority.verify_proof(proof, again.grant, nonce=nonce, action=mode, now=self.clock.wall())
        if not verdict.allowed:
            return DocumentFacts(again.grant, again.reason, proof_problem=verdict.reason)
        return DocumentFacts(again.grant, again.reason, technician=verdict.holders[0])

    async def _handle_offer(self, offer: SessionOffer) -> None:
        policy = self.policy()
        machine = SessionMachine(offer.session_id, offer.mode, created_at=self.clock.wall(),
                                 consent_timeout_s=policy.prompt_timeout_s)
        machine.offer(self.clock.wall())
        try:
            decision = await self.decide(offer, policy)
        except Exception as exc:
            log.exception("deciding on a session offer failed", extra={"session_id": offer.session_id})
            decision = deny("policy", f"agent error: {type(exc).__name__}")
        machine.answer(accepted=decision.accepted, mode_granted=decision.mode, by=decision.by, now=self.clock.wall())
        log.info("session answer", extra={"session_id": offer.session_id, "accepted": decision.accepted,
                                          "by": decision.by, "reason": decision.reason})
        if self.authority is not None and offer.document_id is not None:
            self.authority.audit.record("session.unattended", session_id=offer.session_id,
                                        document_id=offer.document_id,
                                        mode=decision.mode or offer.mode, accepted=decision.accepted, by=decision.by,
                                        technician=decision.verified_technician or None,
                                        server_says=offer.technician, reason=decision.reason)
        colleagues = offer.session_id in self._colleagues and decision.accepted
        self._colleagues.discard(offer.session_id)
        await self.client.send(SessionAnswer(session_id=offer.session_id, accepted=decision.accepted,
                                             mode_granted=decision.mode, by=decision.by,
                                             reason=decision.reason[:256], colleagues=colleagues))
        if not decision.accepted or decision.mode is None:
            self.finished[offer.session_id] = decision.reason
            return
        running = RunningSession(offer, decision.mode, decision.grant, machine,
                                 technician=decision.verified_technician or offer.technician, colleagues=colleagues,
                                 admitted={offer.technician_user}, viewers=[offer.technician_user],
                                 controller=offer.technician_user)
        self.running[offer.session_id] = running
        # From here on the session is the manager's, not the connection's (see the module docstring).
        self._own(self._run(running))

    async def _run(self, running: RunningSession) -> None:
        session_id = running.offer.session_id
        try:
            await self._stream(running)
        finally:
            self.running.pop(session_id, None)
            self.finished[session_id] = running.end_reason
            if not running.end_reported:
                await self._report_end(running)

    async def _report_end(self, running: RunningSession) -> bool:
        """Tell the server why (before the tunnel closes, so the reason is the user's, not "tunnel closed")."""
        running.end_reported = True
        session_id = running.offer.session_id
        try:
            await self.client.send(SessionEnd(session_id=session_id, reason=running.end_reason[:256],
                                              by="user" if running.ended_by == "user" else "agent",
                                              refused_inputs=self._refused.pop(session_id, 0),
                                              bytes_sent=self.tunnel_bytes.get(session_id, 0)))
        except ConnectionError as exc:
            log.info("could not report the session end (control channel down); closing the tunnel says it: %s",
                     exc, extra={"session_id": session_id})
            return False
        return True

    # --- streaming ----------------------------------------------------------------------

    def tunnel_url(self, session_id: str) -> str:
        parts = urlsplit(self.client.state.agent_url)
        path = f"/agent/tunnel/{safe_name(session_id)}"  # the server's id: a plain name, never '..'
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    async def _open_tunnel(self, offer: SessionOffer) -> ClientConnection:
        url = self.tunnel_url(offer.session_id)
        return await connect(
            url, ssl=self.client.ssl_context(), proxy=websocket_proxy(self.client.config.proxy, url),
            additional_headers={TUNNEL_TOKEN_HEADER: offer.tunnel_token}, compression=None,
            max_size=MAX_PAYLOAD + 64, open_timeout=TUNNEL_OPEN_TIMEOUT_S, close_timeout=1, ping_interval=20,
        )

    async def _show_indicator(self, running: RunningSession) -> Indicator | None:
        info = IndicatorInfo(technician=running.technician or running.offer.technician, mode=running.mode,
                             unattended=running.grant is not None, session_id=running.offer.session_id,
                             capabilities=tuple(decide_caps(self.policy(), running.grant).listed()))
        try:
            running.indicator = await self.ui.indicator(info)
            return running.indicator
        except ConsentUnavailable as exc:
            if running.grant is None:
                # Attended sessions must be visible: no indicator, no session.
                running.request_end(f"session indicator unavailable: {exc}", "agent")
            else:
                log.info("no indicator for unattended session: %s", exc)
            return None

    async def _stream(self, running: RunningSession) -> None:
        offer = running.offer
        try:
            ws = await self._open_tunnel(offer)
        except Exception as exc:
            log.warning("could not open the session tunnel", extra={"session_id": offer.session_id,
                                                                   "error": f"{type(exc).__name__}: {exc}"})
            running.request_end(f"tunnel could not be opened: {type(exc).__name__}", "agent")
            return
        counted = _CountingTunnel(ws, running)
        running.machine.start(self.clock.wall())
        indicator = await self._show_indicator(running)
        grant_watch = self._own(self._watch_grant(running)) if running.grant is not None else None
        try:
            while not running.end_reason:
                inner_stop = asyncio.Event()
                screen = asyncio.ensure_future(self.screen_runner(  # input waits while a prompt shows:
                    offer.session_id, counted, mode=running.mode, display=self.display, stop=inner_stop,
                    input_gate=self.ui.prompts, toolkit=decide_caps(self.policy(), running.grant),
                    technician=running.technician, indicator=indicator, lean_jpeg=offer.jpeg_lean is True,
                    batched=offer.batched is True,
                    **self.screen_kwargs))
                waits: set[asyncio.Future[Any]] = {screen, asyncio.ensure_future(running.wake.wait())}
                if indicator is not None:
                    waits.add(asyncio.ensure_future(indicator.ended.wait()))
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waits - {screen}:
                    waiter.cancel()
                running.wake.clear()
                if indicator is not None and indicator.ended.is_set():
                    running.request_end(EndReason.USER.value, "user")
                elif screen.done():
                    running.request_end(EndReason.TUNNEL_CLOSED.value, "technician")
                inner_stop.set()
                stats = await screen
                refused = stats.refused_inputs + running.refused_not_controller
                running.refused_not_controller = 0
                self._refused[offer.session_id] = self._refused.get(offer.session_id, 0) + refused
                if running.upgrade_to is not None and not running.end_reason:
                    running.mode, running.upgrade_to = running.upgrade_to, None
                    running.mode_applied.set()
                    if indicator is not None:
                        await indicator.set_mode(running.mode)
        finally:
            if grant_watch is not None:
                grant_watch.cancel()
            self.tunnel_bytes[offer.session_id] = counted.bytes_sent
            if running.ended_by in ("user", "agent") and await self._report_end(running):
                # Let the server close the tunnel in answer, so it records our reason, not "tunnel closed".
                try:
                    await asyncio.wait_for(ws.wait_closed(), REPORT_GRACE_S)
                except TimeoutError:
                    log.info("server did not close the tunnel after session.end; closing it")
            await ws.close(1000, running.end_reason[:120] or "session ended")
            running.machine.end(running.end_reason, running.ended_by, self.clock.wall())
            if indicator is not None:
                await indicator.close()
            log.info("session ended", extra={"session_id": offer.session_id, "reason": running.end_reason})

    def grant_over(self, grant: UnattendedGrant) -> str:
        """Why a session under ``grant`` must end now ("" while the grant still holds)."""
        now = self.clock.wall()
        if now >= grant.not_after:
            return EndReason.GRANT_EXPIRED.value
        if self.authority is None:
            return EndReason.GRANT_REVOKED.value
        # Held, verified and in scope afresh; any action it allows keeps the session going (mode is fixed).
        check = self.authority.check_grant(grant.grant_id, action=grant.actions[0], now=now, local=self.clock.local())
        if check.grant is not None:
            return ""
        reason = check.verdict.reason
        if "time windows" in reason:
            return EndReason.GRANT_WINDOW.value
        if "revoked" in reason or "no approver-signed" in reason:
            return EndReason.GRANT_REVOKED.value
        return f"grant no longer holds: {reason}"

    async def _watch_grant(self, running: RunningSession) -> None:
        """End the session when its grant expires or its window closes (wall clock, re-read every check)."""
        assert running.grant is not None
        while not running.end_reason:
            reason = self.grant_over(running.grant)
            if reason:
                log.info("grant no longer holds; ending the session",
                         extra={"session_id": running.offer.session_id, "reason": reason})
                running.request_end(reason, "agent")
                return
            now = self.clock.wall()
            left = grant_deadline(running.grant, now, self.clock.local()) - now
            await asyncio.sleep(min(self.deadline_check_s, max(0.01, left)))

    async def _handle_upgrade(self, running: RunningSession, message: SessionMode) -> None:
        """Another mode for a running session: the user is asked again (attended), or, under a grant, the grant must
        allow the mode and the technician must sign a fresh challenge for it (the first proof named the first mode)."""
        offer = running.offer
        grant = running.grant
        # After a hand-off the one asking is the controller the server named (and this device admitted).
        who = running.controlling or offer.technician_user
        handed = who != offer.technician_user
        try:
            decision = await self._consent(ConsentRequest(
                session_id=offer.session_id, technician=who if handed else offer.technician, technician_user=who,
                technician_role=offer.technician_role, mode=message.mode, reason=message.reason,
                current_mode=running.mode, document_id=grant.grant_id if grant is not None else None,
            ), self.policy())
        except Exception as exc:
            log.exception("deciding on a mode change failed", extra={"session_id": offer.session_id})
            decision = deny("policy", f"agent error: {type(exc).__name__}")
        if grant is not None and self.authority is not None and decision.verdict is not Verdict.UNCHANGED:
            self.authority.audit.record("session.upgrade", session_id=offer.session_id, document_id=grant.grant_id,
                                        mode=message.mode, accepted=decision.accepted, by=decision.by,
                                        technician=decision.verified_technician or None,
                                        server_says=offer.technician, reason=decision.reason)
        if decision.accepted and decision.verified_technician:
            running.technician = decision.verified_technician
        accepted, reason = decision.accepted, decision.reason
        if accepted and decision.mode is not None and decision.mode != running.mode and not running.end_reason:
            # Answer only once the screen session runs in the new mode, so the technician's first
            # input after "control enabled" is injected, not refused by the old view-only session.
            running.mode_applied.clear()
            running.upgrade_to = decision.mode
            running.wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.mode_applied.wait(), MODE_SWITCH_TIMEOUT_S)
            running.upgrade_to = None
            if running.mode != decision.mode:
                accepted, reason = False, "the session ended before the new mode took effect"
        await self.client.send(SessionAnswer(session_id=offer.session_id, accepted=accepted,
                                             mode_granted=message.mode if accepted else running.mode,
                                             by=decision.by, reason=reason[:256]))


#: Tunnel text any admitted viewer may send: its acks, and the relay's request for a complete screen.
_ALWAYS_PASS = ('{"type":"ack"', '{"type":"monitor.select"')


class _CountingTunnel:
    """The tunnel as the screen session sees it, counting every byte that leaves the agent — and, once several
    technicians share the session, taking only the controller's messages.

    The relay marks a change of sender (:func:`protocol.session.viewer_mark`); after a mark, anything but acks
    and monitor re-selection (the relay's request for a complete screen) from someone other than
    ``running.controller`` — or from someone this device never admitted — is refused here, counted and
    answered with an error, whatever the server let through.
    """

    def __init__(self, ws: ClientConnection, running: RunningSession | None = None) -> None:
        self.ws = ws
        self.running = running
        self.bytes_sent = 0
        #: Whose messages arrive now (the last mark); None before any mark: the requester's, as always.
        self.sender: str | None = None
        self._refusals = 0

    async def send(self, data: str | bytes, /) -> None:
        self.bytes_sent += len(data)
        await self.ws.send(data)

    async def send_many(self, messages: Sequence[str | bytes], /) -> None:
        """A screen update's messages in one socket write (:mod:`agent.ws_batch`)."""
        self.bytes_sent += sum(len(data) for data in messages)
        await send_frames(self.ws, messages)

    async def recv(self) -> str | bytes:
        while True:
            data = await self.ws.recv()
            if isinstance(data, str):
                mark = parse_viewer_mark(data)
                if mark is not None:
                    self.sender = mark
                    continue
                if data.startswith(_ALWAYS_PASS):
                    return data
            if self._taken():
                return data
            await self._refuse(data)

    def _taken(self) -> bool:
        running = self.running
        if running is None or self.sender is None:
            return True
        return self.sender == running.controller and self.sender in running.admitted

    async def _refuse(self, data: str | bytes) -> None:
        assert self.running is not None
        self.running.refused_not_controller += 1
        self._refusals += 1
        log.info("message from a technician who does not control refused",
                 extra={"session_id": self.running.offer.session_id, "sender": self.sender})
        if self._refusals <= 5 or self._refusals % 100 == 0:  # never a flood of replies
            await self.send(stream.encode_text(stream.Error(
                code="not_controller", message=f"{self.sender} does not control this session: refused by the device")))


def attach(sessions: AgentSessions) -> None:
    """Route the session messages of ``sessions.client`` to ``sessions``."""
    client = sessions.client
    client.register(SessionOffer, sessions.on_offer)
    client.register(SessionEnd, sessions.on_end)
    client.register(SessionMode, sessions.on_mode)
    client.register(SessionProof, sessions.on_proof)
    client.register(SessionJoin, sessions.on_join)
    client.register(SessionPeople, sessions.on_people)
    client.on_ready.append(sessions.on_ready)

    async def on_stop(_client: AgentClient) -> None:
        await sessions.shutdown()

    client.on_stop.append(on_stop)  # the agent stops: its sessions end now, not after the grace
