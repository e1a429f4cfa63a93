"""The agent's task service: accept, check, wait for the window, claim the occurrence, run, persist, report.

Runs live on the agent, not on the connection: a disconnect does not stop a running task,
and its result waits in the ledger until the server acknowledges it. The clock and the
device-local time are injected so tests can move through windows without waiting hours.

Every run is checked against its approver-signed authorization by :mod:`.authorize`, with the
device's authority store; its occurrence is claimed in the replay ledger just before the action
starts, so it runs at most once. Each accepted and each refused run goes to the device's own
audit log with its reason, and the refusal reaches the server in the task result.

A task authorization that names technicians is started by one of them: when such a run is about
to start, the agent sends ``task.challenge`` (a fresh nonce for this run, valid
``proof_timeout_s``) and runs it only if the ``task.proof`` that comes back is a technician the
document names signing that nonce, this device and the action ``tasks`` (:meth:`AuthorityStore.verify_proof`).
No proof in time, or any other signature, refuses the run — so a server that replays a run
without the technician's credential gets nothing. The verified technician is in the device audit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import shutil
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import psutil

from protocol import codec
from protocol.authority import TaskAuthorization, TechnicianProof, body_sha256, decode_body, document_id
from protocol.authority_messages import TaskChallenge, TaskProof
from protocol.messages import Message
from protocol.tasks import TaskArtifactAck, TaskCancel, TaskResult, TaskResultAck, TaskRun, TaskWaiting

from .authorize import Verdict, decide
from .catalog import CATALOG
from .cleanup import DEFAULT_TARGETS
from .commands import CommandRunner, ProcessRunner
from .context import ActionContext, Outcome
from .store import PendingArtifact, TaskLedger
from .upload import ArtifactUploader

if TYPE_CHECKING:
    from agent.authority import AuthorityStore
    from agent.control_client import AgentClient

log = logging.getLogger(__name__)

#: Extra seconds an action gets beyond its timeout before it is cancelled from outside.
TIMEOUT_GRACE_S = 5.0


def _logged_in_users() -> list[str]:
    return [u.name for u in psutil.users()]


def _local_now() -> datetime:
    return datetime.now().astimezone()


def local_zone() -> tzinfo:
    """The device's time zone, as its inventory reports it to the server (which times the occurrences
    of signed schedules in it); the current UTC offset when the zone has no name."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from agent.collectors.os_info import timezone_name

    name, _reason = timezone_name()
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            log.warning("time zone %r unknown; signed schedules are evaluated at the current UTC offset", name)
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def _document_id(message: TaskRun, verdict: Verdict) -> str | None:
    """The id of the document a run names (also when it did not verify: the audit says which one was refused)."""
    if verdict.task is not None:
        return verdict.task.task_id
    if message.authorization is None:
        return None
    try:
        return document_id(decode_body(message.authorization.kind, message.authorization.body))
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
        return f"sha256:{body_sha256(message.authorization.body)[:16]}"


def started_by_technicians(task: TaskAuthorization) -> bool:
    """Does the document name technicians, so that each run needs one of them to sign the device's challenge?"""
    return bool(task.technicians or task.technician_names)


class TaskService:
    def __init__(self, client: AgentClient, authority: AuthorityStore | None = None) -> None:
        self.client = client
        #: The device's authority (pinned root, verified documents, device audit); None runs nothing.
        self.authority = authority
        #: How long a technician has to sign a run's challenge (the unattended sessions' setting).
        self.proof_timeout_s = client.config.unattended_proof_timeout_s
        #: Runs waiting for the technician's proof, by run id (one challenge each).
        self._proofs: dict[str, asyncio.Future[TechnicianProof]] = {}
        #: The technician whose proof the device verified, by run id (for the device audit).
        self._verified: dict[str, str] = {}
        self.runner: CommandRunner = ProcessRunner()
        self.clock: Callable[[], float] = time.time
        self.local: Callable[[], datetime] = _local_now
        self.zone: Callable[[], tzinfo] = local_zone
        #: How often a waiting task re-checks its authorization and window.
        self.poll_s = 30.0
        self.temp_targets: dict[str, list[Path]] = dict(DEFAULT_TARGETS)
        self.logged_in_users: Callable[[], list[str]] = _logged_in_users
        self.which: Callable[[str], str | None] = shutil.which
        self._ledger: TaskLedger | None = None
        self._active: dict[str, asyncio.Task[None]] = {}
        self._started: set[str] = set()
        self._cancel_reasons: dict[str, str] = {}
        self._resumed = False
        self.uploader = ArtifactUploader(client, lambda: self.ledger)

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def ledger(self) -> TaskLedger:
        if self._ledger is None:
            self._ledger = TaskLedger(self.client.state.directory / "tasks.db")
        return self._ledger

    async def _send(self, message: Message) -> bool:
        try:
            await self.client.send(message)
            return True
        except ConnectionError:
            log.info("offline; %s will be re-sent after reconnect", message.type_name())
            return False

    def active_runs(self) -> list[str]:
        return list(self._active)

    # --- message handlers -------------------------------------------------------------------

    async def on_run(self, message: TaskRun) -> None:
        known = await asyncio.to_thread(self.ledger.get, message.run_id)
        if known is not None:
            if known.result is not None:
                await self._send(msgspec.json.decode(known.result, type=TaskResult))
            return
        if not await asyncio.to_thread(self.ledger.add, message.run_id, codec.encode(message), "waiting"):
            return  # the same run delivered twice at once (reconnect flush and live send): one handles it
        self._start(message)

    async def on_proof(self, message: TaskProof) -> None:
        waiting = self._proofs.get(message.run_id)
        if waiting is None or waiting.done():
            log.warning("task.proof for no pending challenge ignored", extra={"run_id": message.run_id})
            return
        waiting.set_result(message.proof)

    async def on_ack(self, message: TaskResultAck) -> None:
        await asyncio.to_thread(self.ledger.ack, message.run_id)

    async def on_artifact_ack(self, message: TaskArtifactAck) -> None:
        await self.uploader.on_ack(message)

    async def on_cancel(self, message: TaskCancel) -> None:
        reason = message.reason or "cancelled by the server"
        task = self._active.get(message.run_id)
        if task is not None:
            self._cancel_reasons[message.run_id] = reason
            task.cancel()
            return
        known = await asyncio.to_thread(self.ledger.get, message.run_id)
        if known is None or known.state != "done":
            if known is None:
                await asyncio.to_thread(self.ledger.add, message.run_id, "{}", "waiting")
            await self._finish(message.run_id, Outcome("cancelled", reason=reason), None)

    async def on_ready(self) -> None:
        if not self._resumed:
            self._resumed = True
            await self._resume()
            pruned = await asyncio.to_thread(self.ledger.prune)
            if pruned:
                log.info("forgot %d old acknowledged task runs", pruned)
        for _run_id, payload in await asyncio.to_thread(self.ledger.unacked_results):
            result = msgspec.json.decode(payload, type=TaskResult)
            if not await self._send(result):
                return
        await self.uploader.run()  # pending artifacts, then new ones as runs finish (until disconnect)

    async def _resume(self) -> None:
        """After a restart: re-arm waiting runs; runs cut off mid-way are reported, not re-run."""
        for row in await asyncio.to_thread(self.ledger.unfinished):
            if row.run_id in self._started:
                continue  # delivered and started in this process while the ledger was being read
            try:
                message = msgspec.json.decode(row.message, type=TaskRun)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                await self._finish(row.run_id, Outcome("failed", reason=f"stored task unreadable: {exc}"), None)
                continue
            if row.state == "running":
                await self._finish(row.run_id, Outcome(
                    "failed", reason="the agent stopped while this task was running; its outcome is unknown"), None)
            else:
                self._start(message)

    # --- one run ----------------------------------------------------------------------------

    def _start(self, message: TaskRun) -> None:
        """Start a run at most once per agent process: a run that is active or already ended here (the ledger
        read of ``_resume`` may predate its end) is not started again."""
        if message.run_id in self._started:
            return
        self._started.add(message.run_id)
        task = asyncio.get_running_loop().create_task(self._process(message), name=f"task-{message.run_id}")
        self._active[message.run_id] = task
        task.add_done_callback(lambda _t: self._active.pop(message.run_id, None))

    def _decide(self, message: TaskRun) -> Verdict:
        """On the event loop, like every other use of the authority store (signature checks take microseconds)."""
        return decide(message, authority=self.authority, ledger=self.ledger.occurrences(), now=self.clock(),
                      local=self.local(), tz=self.zone())

    def _audit(self, event: str, message: TaskRun, verdict: Verdict, reason: str) -> None:
        """The device's own record of an accepted or refused run (the server is told the same)."""
        if self.authority is None:
            return
        self.authority.audit.record(event, run_id=message.run_id, task_id=message.task_id, action=message.action,
                                    document_id=_document_id(message, verdict),
                                    occurrence=verdict.occurrence or None, scheduled_at=message.scheduled_at,
                                    approvers=list(verdict.approvers), server_says=message.technician,
                                    technician=self._verified.get(message.run_id), reason=reason)

    def _claim(self, message: TaskRun, verdict: Verdict) -> Verdict:
        """Take the occurrence in the replay ledger; a run that finds it taken is refused."""
        assert verdict.task is not None and verdict.occurrence
        first = self.ledger.claim(verdict.occurrence, message.run_id, expires_at=verdict.task.not_after)
        if first is None:
            return verdict
        return Verdict("refuse", f"already run on this device: occurrence {verdict.occurrence} runs at most once "
                                 f"(run {first})", task=verdict.task, occurrence=verdict.occurrence)

    async def _process(self, message: TaskRun) -> None:
        started: float | None = None
        try:
            verdict = self._decide(message)
            waited = False
            while verdict.kind == "wait":
                if not waited:
                    waited = True
                    log.info("task waits for its signed window", extra={"run_id": message.run_id,
                                                                         "reason": verdict.reason})
                    await self._send(TaskWaiting(run_id=message.run_id, reason=verdict.reason[:256]))
                await asyncio.sleep(self.poll_s)
                verdict = self._decide(message)
            if verdict.kind == "run" and verdict.task is not None and started_by_technicians(verdict.task):
                verdict = await self._prove(message, verdict)
            if verdict.kind == "run":
                verdict = self._claim(message, verdict)
            if verdict.kind == "refuse":
                reason = f"refused while waiting for the window: {verdict.reason}" if waited else verdict.reason
                log.warning("task refused", extra={"run_id": message.run_id, "action": message.action,
                                                   "reason": reason})
                self._audit("task.refused", message, verdict, reason)
                await self._finish(message.run_id, Outcome("refused", reason=reason), None)
                return
            self._audit("task.accepted", message, verdict, verdict.reason)
            await asyncio.to_thread(self.ledger.set_state, message.run_id, "running")
            started = self.clock()
            outcome = await self._execute(message, verdict)
        except asyncio.CancelledError:
            if message.run_id not in self._cancel_reasons:
                raise  # the agent is shutting down: the ledger still says waiting/running
            reason = self._cancel_reasons.pop(message.run_id)
            await self._finish(message.run_id, Outcome("cancelled", reason=reason), started)
            return
        except Exception as exc:
            log.exception("task failed inside the agent", extra={"run_id": message.run_id})
            outcome = Outcome("failed", reason=f"agent error: {type(exc).__name__}: {exc}")
        await self._finish(message.run_id, outcome, started, cap=message.output_cap)

    async def _prove(self, message: TaskRun, verdict: Verdict) -> Verdict:
        """Ask for a named technician's signature over a fresh nonce for this run; verify it (one attempt)."""
        assert verdict.task is not None
        task, run_id = verdict.task, message.run_id
        if self.authority is None:  # decide() refuses first; kept so that no path runs unproven
            return Verdict("refuse", "this agent holds no trust root; it runs no task", task=task)
        nonce = secrets.token_urlsafe(32)
        waiting: asyncio.Future[TechnicianProof] = asyncio.get_running_loop().create_future()
        self._proofs[run_id] = waiting
        try:
            await self._send(TaskChallenge(run_id=run_id, nonce=nonce, document_id=task.task_id,
                                           device_id=self.authority.device_id,
                                           expires_at=self.clock() + self.proof_timeout_s))
            proof = await asyncio.wait_for(waiting, self.proof_timeout_s)
        except TimeoutError:
            return Verdict("refuse", f"technician proof refused: no technician proof arrived within "
                                     f"{self.proof_timeout_s:g} s", task=task, occurrence=verdict.occurrence)
        finally:
            self._proofs.pop(run_id, None)  # the nonce is retired: one proof per challenge
        # The document may have been revoked, or its window closed, while the technician signed.
        again = self._decide(message)
        if again.kind != "run" or again.task is None:
            return Verdict("refuse", f"no longer allowed after the technician's proof: {again.reason}",
                           task=again.task, occurrence=again.occurrence)
        checked = self.authority.verify_proof(proof, again.task, nonce=nonce, action="tasks", now=self.clock())
        if not checked.allowed:
            return Verdict("refuse", f"technician proof refused: {checked.reason}", task=again.task,
                           occurrence=again.occurrence)
        self._verified[run_id] = checked.holders[0]
        return dataclasses.replace(again, reason=f"{again.reason}; technician {checked.holders[0]} verified")

    async def _execute(self, message: TaskRun, verdict: Verdict) -> Outcome:
        spec = CATALOG[message.action]
        ctx = ActionContext(run_id=message.run_id, runner=self.runner, state_dir=self.client.state.directory,
                            timeout_s=message.timeout_s, output_cap=message.output_cap,
                            temp_targets=self.temp_targets, logged_in_users=self.logged_in_users,
                            which=self.which, clock=self.clock)
        log.info("task starts", extra={"run_id": message.run_id, "action": message.action,
                                       "occurrence": verdict.occurrence, "technician": message.technician})
        try:
            return await asyncio.wait_for(spec.run(verdict.params, ctx, message.script or ""),
                                          timeout=message.timeout_s + TIMEOUT_GRACE_S)
        except TimeoutError:
            return Outcome("timed_out", reason=f"killed after {message.timeout_s:g} s")
        except FileNotFoundError as exc:
            return Outcome("failed", reason=f"program not found: {exc.filename or exc}")

    async def _finish(self, run_id: str, outcome: Outcome, started: float | None, *, cap: int = 65536) -> None:
        stdout, stderr = outcome.stdout, outcome.stderr
        truncated = outcome.truncated or len(stdout) > cap or len(stderr) > cap
        result = TaskResult(run_id=run_id, status=outcome.status,  # type: ignore[arg-type]
                            exit_code=outcome.exit_code, stdout=stdout[:cap], stderr=stderr[:cap],
                            truncated=truncated, started_at=started, ended_at=self.clock(),
                            reason=outcome.reason[:4096], details=outcome.details)
        artifact = None
        if outcome.artifact is not None:
            artifact = PendingArtifact(run_id, outcome.artifact, int(outcome.details["size"]),
                                       str(outcome.details["sha256"]))
        await asyncio.to_thread(self.ledger.finish, run_id, codec.encode(result), artifact)
        log.info("task finished", extra={"run_id": run_id, "status": outcome.status, "exit_code": outcome.exit_code})
        await self._send(result)
        if artifact is not None:
            self.uploader.wake.set()
