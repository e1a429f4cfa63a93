"""The agent's own checks before any task runs: catalog, params, and the approver-signed authorization.

Outcome is one of: run now, wait (the signed document would allow it, but its validity or window
has not opened yet), or refuse with a reason. Nothing the server says is taken on trust: the run
must carry a :class:`~protocol.authority.TaskAuthorization` that verifies from this device's
pinned root (approvers certified, four-eyes for scripts and groups by the device's policy, not
revoked, fresh revocations, this device or its group) and the run must be exactly what it says —
the action, the SHA-256 of the script bytes, the parameters — at an occurrence of its signed
schedule (or once, when it has none) that has not run on this device before (the replay ledger,
:class:`agent.tasks.store.TaskLedger`).
"""

from __future__ import annotations

import math
from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, Literal

from certs.authority import when
from common.files import UnsafePath, safe_name
from protocol.authority import TaskAuthorization, check_occurrence, occurrence_key
from protocol.grants import in_window
from protocol.tasks import MAX_SCRIPT_BYTES, TaskRun, canonical_params, script_sha256

from .catalog import CATALOG, BadParams, parse_params

if TYPE_CHECKING:
    from agent.authority import AuthorityStore

Kind = Literal["run", "wait", "refuse"]

NO_AUTHORIZATION = ("the run carries no approver-signed task authorization; nothing the server says on its own "
                    "makes a task run on this device")


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str
    params: Any = None
    #: The verified document the run is made under (when it got that far).
    task: TaskAuthorization | None = None
    #: The replay-ledger key of this occurrence (``document@once`` or ``document@epoch``).
    occurrence: str = ""
    #: Holders of the approvals that counted.
    approvers: tuple[str, ...] = ()


def _refuse(reason: str, task: TaskAuthorization | None = None, occurrence: str = "") -> Verdict:
    return Verdict("refuse", reason, task=task, occurrence=occurrence)


def check_request(message: TaskRun) -> Verdict | Any:
    """Static checks (no clock, no document): return the parsed params, or a refusal Verdict."""
    try:
        safe_name(message.run_id)  # it names the run's files on this device (the wire type checks it too)
    except UnsafePath as exc:
        return _refuse(f"run id refused: {exc}")
    spec = CATALOG.get(message.action)
    if spec is None:
        return _refuse(f"unknown action {message.action!r}; known: {', '.join(sorted(CATALOG))}")
    try:
        params = parse_params(spec, message.params)
    except BadParams as exc:
        return _refuse(str(exc))
    if message.action != "script":
        if message.script is not None:
            return _refuse(f"action {message.action!r} does not take a script")
        return params
    if message.script is None:
        return _refuse("script action without a script")
    size = len(message.script.encode())
    if size > MAX_SCRIPT_BYTES:
        return _refuse(f"script of {size} bytes exceeds the limit of {MAX_SCRIPT_BYTES}")
    return params


def mismatch(task: TaskAuthorization, message: TaskRun) -> str | None:
    """How the run differs from what the approvers signed (None when it is exactly that)."""
    name = f"task authorization {task.task_id}"
    if message.action != task.action:
        return f"{name} is for action {task.action!r}, not {message.action!r}"
    if task.script_sha256 is not None:
        actual = script_sha256(message.script or "")
        if actual != task.script_sha256:
            return (f"the script is not the one the approvers signed: its SHA-256 is {actual}, {name} names "
                    f"{task.script_sha256}")
    if canonical_params(message.params) != canonical_params(task.params):
        return (f"the parameters are not the ones the approvers signed: got {canonical_params(message.params).decode()}"
                f", {name} says {canonical_params(task.params).decode()}")
    # A document naming technicians is run only with one of them's proof (agent.tasks.service asks for it).
    return None


def decide(message: TaskRun, *, authority: AuthorityStore | None, ledger: Container[str], now: float,
           local: datetime, tz: tzinfo) -> Verdict:
    """Full check at time ``now`` (``local`` on the device's clock, zone ``tz``): run, wait, or refuse."""
    params = check_request(message)
    if isinstance(params, Verdict):
        return params
    if message.authorization is None:
        return _refuse(NO_AUTHORIZATION)
    if authority is None:
        return _refuse("this agent holds no trust root; it runs no task")
    if not math.isfinite(now):
        return _refuse("the clock is not a finite number")
    verdict = authority.verify(message.authorization, now)
    if not verdict.allowed:
        return _refuse(f"task authorization refused: {verdict.reason}")
    task = verdict.body
    if not isinstance(task, TaskAuthorization):
        return _refuse(f"the run names a {message.authorization.kind} document, not a task authorization")
    problem = mismatch(task, message)
    if problem:
        return _refuse(problem, task)
    key = occurrence_key(task.task_id, message.scheduled_at)
    if key in ledger:
        return _refuse(f"already run on this device: occurrence {key} runs at most once", task, key)
    signed = Verdict("run", "", params, task, key, verdict.holders)
    if now < task.not_before:
        return _waiting(signed, f"task authorization {task.task_id} is not valid before {when(task.not_before)}")
    occurrence = check_occurrence(task, scheduled_at=message.scheduled_at, now=now, tz=tz, ledger=ledger)
    if not occurrence.allowed:
        return _refuse(f"task authorization {task.task_id}: {occurrence.reason}", task, key)
    if task.windows and not any(in_window(w, local) for w in task.windows):
        return _waiting(signed, f"outside task authorization {task.task_id}'s time windows")
    approvers = ", ".join(verdict.holders)
    return Verdict("run", f"occurrence {key}, approved by {approvers}", params, task, key, verdict.holders)


def _waiting(signed: Verdict, reason: str) -> Verdict:
    return Verdict("wait", reason, signed.params, signed.task, signed.occurrence, signed.approvers)
