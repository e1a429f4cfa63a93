"""The agent's help desk: support requests on the control channel, the book, the self-service fixes.

Whoever asks — the Get help window or ``helpline help --send`` of a user, through the direct-mode
socket or a session helper — is a :class:`Caller` whose uid comes from the kernel (SO_PEERCRED),
never from what it says; a caller sees and changes only its own requests. ``request.open`` is
sent on every connection until the server's first ``request.status`` for its ``local_id`` (the
idempotency key); a note or withdrawal stays in the request's outbox, sent again on every
connection, until the server's ``request.ack`` for its message id (applied once there). The server
sends every open request's status on connect, so what the window shows after a restart of the agent
is current. Watchers (open windows) get the new list on every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol import codec
from protocol.messages import Error, Message
from protocol.requests import (
    ACK_CAPABILITY,
    MAX_OPEN_PER_DEVICE,
    Diagnostic,
    FixAttempt,
    FixOutcome,
    RequestAck,
    RequestAdd,
    RequestOpen,
    RequestStatus,
    RequestWithdraw,
)

from ..update import download
from . import diagnostics, script_fetch
from .book import MAX_OPEN_PER_USER, Book, Entry
from .fixes import FixResult, SelfService, view
from .wire import Open, RequestView, State

if TYPE_CHECKING:
    from agent.authority import AuthorityStore
    from agent.control_client import AgentClient
    from agent.tasks.service import TaskService

log = logging.getLogger(__name__)

#: Notes and a withdrawal one request may have waiting for the server's acknowledgement.
MAX_OUTBOX = 32
#: How long the device's diagnostics are reused (every window's state and every request attach them).
DIAGNOSTICS_TTL_S = 15.0
#: How long a collection may take before the last one (or none) is used (a hung mount blocks statvfs).
DIAGNOSTICS_WAIT_S = 5.0


async def _ack_capability() -> list[str]:
    return [ACK_CAPABILITY]


class HelpRefused(Exception):
    """The call cannot be done; the message says why (shown to the user)."""


@dataclass(frozen=True)
class Caller:
    """Who asks: the kernel's uid and that uid's name (the requester the technician sees)."""

    uid: int
    user: str


@dataclass
class Watcher:
    caller: Caller
    push: Callable[[list[RequestView]], None]
    closed: bool = False


@dataclass
class HelpDesk:
    client: AgentClient
    authority: AuthorityStore | None
    tasks: TaskService
    clock: Callable[[], float] = time.time
    probe: diagnostics.Probe = field(default_factory=diagnostics.Probe)

    def __post_init__(self) -> None:
        self.book = Book(self.client.state.directory)
        self.fixes = SelfService(self.authority, self.tasks, self.client.state.directory, self.clock,
                                 fetcher=self._fetch_script)
        self.watchers: list[Watcher] = []
        self._lock = asyncio.Lock()
        #: Message ids of outbox entries sent on the current connection (cleared on each new one).
        self._sent: set[str] = set()
        self._diagnostics: tuple[float, list[Diagnostic]] | None = None
        self._diagnosing: asyncio.Task[list[Diagnostic]] | None = None

    # --- control channel ------------------------------------------------------------------------

    def attach(self) -> None:
        self.client.register(RequestStatus, self.on_status)
        self.client.register(RequestAck, self.on_ack)
        self.client.capability_sources.append(_ack_capability)
        self.client.error_listeners.append(self.on_error)
        self.client.on_ready.append(self.on_ready)

    def _fetch_script(self, sha256: str, directory: Path) -> Path:
        """Blocking: the fix script ``sha256`` from this agent's server, over its own mTLS identity."""
        source = download.Source.from_agent_url(self.client.state.agent_url, self.client.config.proxy)
        return script_fetch.fetch(source, self.client.ssl_context(), sha256=sha256, directory=directory)

    async def refresh(self) -> None:
        """The scripts of verified script fixes still missing, while the server is reachable: called when
        new documents verified (runtime's authority hook) and before a window lists the fixes."""
        if self.client.ready.is_set():
            await self.fixes.fetch_missing()

    async def on_ready(self, _client: Any = None) -> None:
        """A new connection: send what is still owed (opens not yet answered, unacknowledged notes and
        withdrawals — each again, the server applies a message id once — and outcomes)."""
        async with self._lock:
            self._sent.clear()
            for entry in list(self.book.entries.values()):
                if entry.pending_open and not await self._send_raw(entry.pending_open):
                    return
                if not await self._flush(entry):
                    return
            while self.book.outbox:
                if not await self._send_raw(self.book.outbox[0]):
                    return
                self.book.outbox.pop(0)
                self.book.save()

    async def _flush(self, entry: Entry) -> bool:
        """Send the entry's notes/withdrawal not yet sent on this connection; they stay in its outbox until the
        server's ``request.ack``. False when the channel is gone. The caller holds the lock."""
        for raw in list(entry.outbox):
            message = codec.decode(raw)
            if message.id in self._sent:
                continue
            try:
                await self.client.send(message)
            except ConnectionError:
                return False
            self._sent.add(message.id)
        return True

    async def on_ack(self, _client: Any, message: RequestAck) -> None:
        """The server handled a note/withdrawal: it leaves the outbox (a refusal is logged; it stays refused)."""
        entry = self.book.entries.get(message.local_id)
        if entry is None:
            return
        kept = [raw for raw in entry.outbox if codec.decode(raw).id != message.message_id]
        if len(kept) == len(entry.outbox):
            return
        if not message.applied:
            log.warning("the server refused a change to a help request", extra={"local_id": message.local_id})
        async with self._lock:
            entry.outbox = kept
            self.book.save()
        self._sent.discard(message.message_id)

    async def on_error(self, _client: Any, message: Error) -> None:
        """The server refused a ``request.open`` (too many open, invalid, internal): the request is marked failed
        and its user told why — it is not sent again (its screenshot with it) on every connection."""
        async with self._lock:
            entry = next((e for e in self.book.entries.values()
                          if e.pending_open and codec.decode(e.pending_open).id == message.in_reply_to), None)
            if entry is None:
                return
            log.warning("the server refused a help request", extra={"local_id": entry.local_id, "code": message.code,
                                                                    "reason": message.message})
            entry.state, entry.pending_open, entry.outbox = "failed", "", []
            entry.note = f"The server refused this request ({message.code}): {message.message}"[:4000]
            entry.updated_at = self.clock()
            self.book.save()
        self._notify(entry.uid)

    async def _send_raw(self, raw: str) -> bool:
        try:
            await self.client.send(codec.decode(raw))
            return True
        except ConnectionError:
            return False

    async def _send(self, message: Message) -> bool:
        try:
            await self.client.send(message)
            return True
        except ConnectionError:
            log.info("offline; %s is sent when the agent reconnects", message.type_name())
            return False

    async def on_status(self, _client: Any, message: RequestStatus) -> None:
        entry = self.book.apply(message)
        if entry is None:
            log.info("request.status for a request this device does not hold", extra={"local_id": message.local_id})
            return
        log.info("help request status", extra={"local_id": message.local_id, "number": message.number,
                                               "state": message.state})
        async with self._lock:  # notes and a withdrawal made before the open was answered
            await self._flush(entry)
        self._notify(entry.uid)

    # --- what callers ask -------------------------------------------------------------------------

    async def diagnostics(self) -> list[Diagnostic]:
        """The device's diagnostics, collected in a thread (disks, memory, routes: blocking reads) at most every
        :data:`DIAGNOSTICS_TTL_S`; one collection at a time however many windows ask."""
        running = self._diagnosing
        if running is not None and running.done():  # one that outlasted its wait: its result is the newest
            self._diagnosing = None
            if not running.cancelled() and running.exception() is None:
                self._diagnostics = (time.monotonic(), running.result())
        if self._diagnostics is not None and time.monotonic() - self._diagnostics[0] < DIAGNOSTICS_TTL_S:
            return self._diagnostics[1]
        if self._diagnosing is None:
            self._diagnosing = asyncio.ensure_future(asyncio.to_thread(diagnostics.collect, self.probe))
        try:
            found = await asyncio.wait_for(asyncio.shield(self._diagnosing), DIAGNOSTICS_WAIT_S)
        except TimeoutError:
            log.warning("collecting diagnostics takes too long; sending the last ones")
            return [] if self._diagnostics is None else self._diagnostics[1]
        self._diagnosing = None
        self._diagnostics = (time.monotonic(), found)
        return found

    async def state(self, caller: Caller, call: int) -> State:
        return State(call=call, user=caller.user[:256], diagnostics=await self.diagnostics(),
                     fixes=[view(f) for f in self.fixes.offered()][:64], requests=self.views(caller.uid),
                     online=self.client.ready.is_set())

    def views(self, uid: int) -> list[RequestView]:
        return [_view(e) for e in self.book.of(uid)][:64]

    async def open(self, caller: Caller, call: Open) -> str:
        if self.book.open_count(caller.uid) >= MAX_OPEN_PER_USER:
            raise HelpRefused(f"you already have {MAX_OPEN_PER_USER} open requests; add to one of them instead")
        if sum(1 for e in self.book.entries.values() if e.open) >= MAX_OPEN_PER_DEVICE:  # the server's cap
            raise HelpRefused(f"this computer already has {MAX_OPEN_PER_DEVICE} open requests; add to one instead")
        now = self.clock()
        local_id = self.book.new_local_id()
        message = RequestOpen(local_id=local_id, summary=call.summary, details=call.details, urgency=call.urgency,
                              requester=caller.user[:256], screenshot=call.screenshot,
                              diagnostics=await self.diagnostics(), attempt=call.attempt)
        async with self._lock:
            self.book.add(Entry(local_id=local_id, uid=caller.uid, requester=caller.user, summary=call.summary,
                                urgency=call.urgency, created_at=now, updated_at=now,
                                pending_open=codec.encode(message)), now)
            await self._send(message)
        log.info("help requested", extra={"local_id": local_id, "user": caller.user, "urgency": call.urgency,
                                          "screenshot": call.screenshot is not None,
                                          "attempt": call.attempt.fix_id if call.attempt else None})
        self._notify(caller.uid)
        return local_id

    def _own(self, caller: Caller, local_id: str) -> Entry:
        entry = self.book.entries.get(local_id)
        if entry is None or entry.uid != caller.uid:
            raise HelpRefused("no such request of yours")
        return entry

    async def add(self, caller: Caller, local_id: str, text: str) -> None:
        entry = self._own(caller, local_id)
        if entry.state == "withdrawn":
            raise HelpRefused("this request was withdrawn")
        await self._later_or_now(entry, RequestAdd(local_id=local_id, text=text))

    async def withdraw(self, caller: Caller, local_id: str) -> None:
        entry = self._own(caller, local_id)
        if not entry.open:
            raise HelpRefused(f"this request is {entry.state} already")
        await self._later_or_now(entry, RequestWithdraw(local_id=local_id))

    async def _later_or_now(self, entry: Entry, message: Message) -> None:
        """Into the entry's outbox (kept until the server acknowledges it), sent now unless offline or the open
        is not answered yet."""
        async with self._lock:
            if len(entry.outbox) >= MAX_OUTBOX:
                raise HelpRefused("too many changes to this request are waiting to be sent; try again when online")
            entry.outbox.append(codec.encode(message))
            self.book.save()
            if not entry.pending_open:
                await self._flush(entry)

    async def run_fix(self, caller: Caller, fix_id: str, params: dict[str, Any]) -> FixResult:
        result = await self.fixes.run(fix_id, params, user=caller.user)
        if result.ran:
            outcome = FixOutcome(fix_id=result.fix_id, title=result.title[:256], ok=result.ok,
                                 detail=result.detail[:4000])
            if not await self._send(outcome):
                self.book.outbox.append(codec.encode(outcome))
                self.book.save()
        return result

    # --- watchers ---------------------------------------------------------------------------------

    def watch(self, caller: Caller, push: Callable[[list[RequestView]], None]) -> Watcher:
        watcher = Watcher(caller, push)
        self.watchers.append(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        watcher.closed = True
        with contextlib.suppress(ValueError):
            self.watchers.remove(watcher)

    def _notify(self, uid: int) -> None:
        views = self.views(uid)
        for watcher in list(self.watchers):
            if watcher.caller.uid == uid and not watcher.closed:
                try:
                    watcher.push(views)
                except Exception:
                    log.exception("a help window's update failed")


def attempt_of(result: FixResult, *, helped: bool) -> FixAttempt:
    """The attempt attached to an escalation: the fix failed, or ran and did not help."""
    outcome = "didnt_help" if result.ok and not helped else ("ok" if result.ok else "failed")
    return FixAttempt(fix_id=result.fix_id, title=result.title[:256], outcome=outcome,  # type: ignore[arg-type]
                      detail=result.detail[:4000])


def _view(entry: Entry) -> RequestView:
    return RequestView(local_id=entry.local_id, summary=entry.summary[:256], urgency=entry.urgency,  # type: ignore[arg-type]
                       state=entry.state, number=entry.number, claimed_by=entry.claimed_by[:256],  # type: ignore[arg-type]
                       note=entry.note[:4000], created_at=entry.created_at, updated_at=entry.updated_at)
