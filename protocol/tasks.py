"""Maintenance-task messages (pure, no I/O).

Flow: the server sends ``task.run``; the agent checks it (catalog, params, and the
approver-signed :class:`~protocol.authority.TaskAuthorization` it carries: chain from the
pinned root, four-eyes for scripts, action, script hash, parameters, targets, window, and
that this occurrence has not run before), runs it or refuses it, and answers
``task.result`` — repeated after reconnects until the server answers ``task.result.ack``.
``task.cancel`` stops a waiting or running task.

The server holds no key that can make a task run: it relays the document approvers signed
and the script bytes whose SHA-256 they signed, and the device checks both.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from . import limits
from .authority import SignedDocument
from .messages import Id, Message, ShortStr

#: Largest script the agent accepts (bytes of UTF-8 text).
MAX_SCRIPT_BYTES = 256 * 1024
#: Largest output cap a task may ask for, per stream.
MAX_OUTPUT_CAP = 512 * 1024
DEFAULT_OUTPUT_CAP = 64 * 1024
MAX_TIMEOUT_S = 24 * 3600
DEFAULT_TIMEOUT_S = 1800

#: The agent's built-in catalog (the agent is the authority; the server checks names early).
ACTIONS: tuple[str, ...] = ("diagnostics", "restart_service", "clear_temp", "updates", "reboot", "script")

ActionName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z_]+$")]
Status = Literal["succeeded", "failed", "timed_out", "refused", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "timed_out", "refused", "cancelled"})
Output = Annotated[str, msgspec.Meta(max_length=MAX_OUTPUT_CAP)]
Script = Annotated[str, msgspec.Meta(max_length=MAX_SCRIPT_BYTES * 4)]  # the byte limit is checked by the agent

_params_encoder = msgspec.json.Encoder(order="sorted")


def canonical_params(params: dict[str, Any]) -> bytes:
    """Sorted-key compact JSON of the parameters: how a run's and a document's parameters are compared."""
    return _params_encoder.encode(params)


def script_sha256(script: str) -> str:
    """SHA-256 hex of the script's UTF-8 bytes: what a TaskAuthorization's ``script_sha256`` names."""
    return hashlib.sha256(script.encode()).hexdigest()


class TaskRun(Message, frozen=True, tag="task.run"):
    """Run one task on this device under an approver-signed TaskAuthorization (the agent re-checks everything)."""

    sender: ClassVar[str] = "server"
    task_id: Id
    run_id: Id
    action: ActionName
    #: Who created the task on the server (shown and audited; authorizes nothing).
    technician: ShortStr
    params: Annotated[dict[str, Any], msgspec.Meta(max_length=limits.MAX_SMALL_LIST)] = {}
    role: ShortStr = ""
    script: Script | None = None
    #: The approver-signed TaskAuthorization (protocol/authority.py) the run is made under; the
    #: agent verifies the chain itself and runs each occurrence at most once (its replay ledger).
    #: A run without one is refused.
    authorization: SignedDocument | None = None
    #: For a recurring schedule: the occurrence this run is (epoch seconds), the ledger's key.
    scheduled_at: Annotated[float, msgspec.Meta(ge=0, le=1e11)] | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMEOUT_S)] = DEFAULT_TIMEOUT_S
    output_cap: Annotated[int, msgspec.Meta(ge=0, le=MAX_OUTPUT_CAP)] = DEFAULT_OUTPUT_CAP


class TaskResult(Message, frozen=True, tag="task.result"):
    """Outcome of one run; re-sent until acknowledged."""

    sender: ClassVar[str] = "agent"
    run_id: Id
    status: Status
    ended_at: float
    exit_code: int | None = None
    stdout: Output = ""
    stderr: Output = ""
    truncated: bool = False
    started_at: float | None = None
    reason: Annotated[str, msgspec.Meta(max_length=limits.MAX_TEXT)] = ""
    #: Action-specific facts (bundle path and size, bytes freed, updates found).
    details: Annotated[dict[str, Any], msgspec.Meta(max_length=limits.MAX_SMALL_LIST)] = {}


class TaskResultAck(Message, frozen=True, tag="task.result.ack"):
    """The server stored the result; the agent may forget it."""

    sender: ClassVar[str] = "server"
    run_id: Id


class TaskCancel(Message, frozen=True, tag="task.cancel"):
    """Stop a waiting or running task (its process tree is killed)."""

    sender: ClassVar[str] = "server"
    run_id: Id
    reason: ShortStr = ""


class TaskWaiting(Message, frozen=True, tag="task.waiting"):
    """The agent accepted the task but holds it until the signed window opens."""

    sender: ClassVar[str] = "agent"
    run_id: Id
    reason: ShortStr


# --- artifacts (the diagnostics bundle) travel to the server in bounded chunks -----------------

#: Raw bytes per chunk (base64 makes the message about a third bigger).
ARTIFACT_CHUNK_BYTES = 256 * 1024
#: Base64 of one chunk, at most.
_CHUNK_B64 = (ARTIFACT_CHUNK_BYTES + 2) // 3 * 4
Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class TaskArtifactBegin(Message, frozen=True, tag="task.artifact.begin"):
    """The agent offers a run's artifact (or resumes it); the server answers where to continue."""

    sender: ClassVar[str] = "agent"
    run_id: Id
    size: Annotated[int, msgspec.Meta(ge=0)]
    sha256: Sha256Hex
    chunk_size: Annotated[int, msgspec.Meta(gt=0, le=ARTIFACT_CHUNK_BYTES)] = ARTIFACT_CHUNK_BYTES


class TaskArtifactChunk(Message, frozen=True, tag="task.artifact.chunk"):
    """One chunk; the next is sent only after its ack, so the channel stays free for other messages."""

    sender: ClassVar[str] = "agent"
    run_id: Id
    index: Annotated[int, msgspec.Meta(ge=0)]
    total: Annotated[int, msgspec.Meta(ge=1)]
    data: Annotated[str, msgspec.Meta(max_length=_CHUNK_B64)]  # base64


class TaskArtifactAck(Message, frozen=True, tag="task.artifact.ack"):
    """Where the upload stands: send chunk ``next_index`` (continue), done (stored), or stop (refused)."""

    sender: ClassVar[str] = "server"
    run_id: Id
    status: Literal["continue", "stored", "refused"]
    next_index: Annotated[int, msgspec.Meta(ge=0)] = 0
    reason: ShortStr = ""
