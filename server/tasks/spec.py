"""What an admin asks for when creating a task, checked once, where it is built.

A task runs under an approver-signed :class:`~protocol.authority.TaskAuthorization` (its
``document_id``): the action, the parameters, the script's SHA-256 and the schedule are what the
approvers signed, and the server only decides *delivery* (target, start, window, jitter, waves).
:class:`TaskSpec` is the request the service stores (from the REST API, the CLI or a test);
constructing one validates it, so no later step sees an unknown action, a target that is
neither one device nor one group, a cron expression that never fires, or a window, jitter,
start time or threshold that is negative, NaN or infinite. :class:`TaskRequest` is the REST
body: the same fields with size limits, minus who asks (that comes from the login); the
action, parameters and schedule may be left out and are then taken from the document.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

import msgspec

from protocol import limits
from protocol.authority import DocumentId, TaskAuthorization
from protocol.tasks import ACTIONS, DEFAULT_OUTPUT_CAP, DEFAULT_TIMEOUT_S, MAX_OUTPUT_CAP, MAX_TIMEOUT_S, Script
from server.errors import ApiError

from .cron import Cron, CronError

OfflinePolicy = Literal["next", "missed"]
Action = Literal["diagnostics", "restart_service", "clear_temp", "updates", "reboot", "script"]
if set(get_args(Action)) != set(ACTIONS):  # one catalog: the agent's (protocol.tasks.ACTIONS)
    raise RuntimeError("server.tasks.spec.Action differs from protocol.tasks.ACTIONS")
#: Longest delivery window: a run that may start up to a month after its due time.
MAX_WINDOW_S = 31 * 86400
#: Latest one-off start time accepted (year 2100; also keeps timestamps finite and sane).
MAX_RUN_AT = 4_102_444_800.0

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_SHORT_STR)]
Params = Annotated[dict[str, Any], msgspec.Meta(max_length=limits.MAX_SMALL_LIST)]


class TaskSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A task request, valid once constructed (:class:`~server.errors.ApiError` 400 otherwise)."""

    action: str
    #: The approver-signed TaskAuthorization the runs are made under (the agent verifies it).
    document_id: str
    technician: str
    role: str = ""
    params: dict[str, Any] = {}
    script: str | None = None
    device: str | None = None
    group: str | None = None
    #: Five-field cron (device-local time) for a recurring task; None = one-off.
    cron: str | None = None
    #: One-off start time (epoch s); None = now.
    run_at: float | None = None
    #: How long after the due time a run may still be delivered.
    window_s: float = 3600.0
    #: Random delay (0..jitter_s) added to each device's start, inside the window.
    jitter_s: float = 0.0
    #: A device offline for its whole window: run at its next window, or mark the run missed.
    offline_policy: OfflinePolicy = "next"
    wave_percent: int | None = None
    failure_threshold: float = 0.2
    timeout_s: float = DEFAULT_TIMEOUT_S
    output_cap: int = DEFAULT_OUTPUT_CAP

    def __post_init__(self) -> None:
        validate(self)

    @property
    def target(self) -> tuple[Literal["device", "group"], str]:
        """(kind, name) of the one target."""
        if self.device is not None:
            return "device", self.device
        assert self.group is not None  # validate() saw exactly one
        return "group", self.group


def _refuse(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def _finite(*values: float | None) -> bool:
    return all(v is None or math.isfinite(v) for v in values)


def validate(spec: TaskSpec) -> None:
    """Every rule a task request must meet; the ``code`` of the first broken one is what clients see."""
    if spec.action not in ACTIONS:
        raise _refuse("unknown_action", f"unknown action {spec.action!r}; known: {', '.join(ACTIONS)}")
    if (spec.device is None) == (spec.group is None):
        raise _refuse("bad_target", "give exactly one target: a device or a group")
    if spec.action == "script" and not spec.script:
        raise _refuse("bad_params", "the script action needs a script")
    if spec.action != "script" and spec.script:
        raise _refuse("bad_params", f"action {spec.action!r} does not take a script")
    if spec.offline_policy not in ("next", "missed"):
        raise _refuse("bad_offline_policy", "offline policy is 'next' or 'missed'")
    if spec.cron is not None:
        try:
            Cron.parse(spec.cron)
        except CronError as exc:
            raise _refuse("bad_schedule", str(exc)) from exc
    if spec.run_at is not None and not (_finite(spec.run_at) and 0 <= spec.run_at <= MAX_RUN_AT):
        raise _refuse("bad_schedule", "run_at must be a time (epoch seconds) before 2100")
    if not (_finite(spec.timeout_s) and 0 < spec.timeout_s <= MAX_TIMEOUT_S):
        raise _refuse("bad_timeout", f"timeout must be within 0..{MAX_TIMEOUT_S} s")
    if not 0 <= spec.output_cap <= MAX_OUTPUT_CAP:
        raise _refuse("bad_output_cap", f"output cap must be within 0..{MAX_OUTPUT_CAP} bytes")
    # Written so that NaN fails: every comparison with NaN is False.
    if not (_finite(spec.window_s, spec.jitter_s) and 0 < spec.window_s <= MAX_WINDOW_S
            and 0 <= spec.jitter_s <= spec.window_s):
        raise _refuse("bad_window", f"need 0 < window <= {MAX_WINDOW_S} s and 0 <= jitter <= window")
    if spec.wave_percent is not None and not 1 <= spec.wave_percent <= 100:
        raise _refuse("bad_waves", "wave percent must be within 1..100")
    if not (_finite(spec.failure_threshold) and 0 <= spec.failure_threshold <= 1):
        raise _refuse("bad_threshold", "failure threshold is a fraction within 0..1")


class TaskRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/tasks``; the technician and role are the caller's."""

    document_id: Annotated[DocumentId, msgspec.Meta(description=(
        "The approver-signed task authorization (`/api/v1/documents`) the runs are made under: its action, "
        "parameters, script SHA-256 and schedule are what runs. Devices verify it themselves."))]
    action: Annotated[Action, msgspec.Meta(description="Default: the document's; must equal it.")] | None = None
    params: Annotated[Params, msgspec.Meta(description="Default: the document's; must equal it.")] | None = None
    script: Annotated[Script, msgspec.Meta(description="The script's text; its SHA-256 must be the one the "
                                                       "document names.")] | None = None
    device: Annotated[Name, msgspec.Meta(description="One device; or give group.")] | None = None
    group: Annotated[Name, msgspec.Meta(description="Every device of the group.")] | None = None
    cron: Annotated[str, msgspec.Meta(max_length=128, description="Default: the document's signed schedule "
                                                                  "(five-field cron, device-local time); must "
                                                                  "equal it.")] | None = None
    run_at: Annotated[float, msgspec.Meta(ge=0, le=MAX_RUN_AT, description="One-off start (epoch s; "
                                                                             "default now).")] | None = None
    window_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_WINDOW_S)] = 3600.0
    jitter_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_WINDOW_S)] = 0.0
    offline_policy: OfflinePolicy = "next"
    wave_percent: Annotated[int, msgspec.Meta(ge=1, le=100, description="Roll out in waves of this share "
                                                                         "of devices.")] | None = None
    failure_threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMEOUT_S)] = DEFAULT_TIMEOUT_S
    output_cap: Annotated[int, msgspec.Meta(ge=0, le=MAX_OUTPUT_CAP)] = DEFAULT_OUTPUT_CAP

    def spec(self, *, technician: str, role: str, authorization: TaskAuthorization) -> TaskSpec:
        """The validated spec, with what the request left out taken from ``authorization`` (raises
        ApiError 400 with the rule's code; the service checks the rest against the document)."""
        fields = msgspec.structs.asdict(self)
        fields["action"] = self.action if self.action is not None else authorization.action
        fields["params"] = self.params if self.params is not None else dict(authorization.params)
        fields["cron"] = self.cron if self.cron is not None else authorization.schedule
        return TaskSpec(technician=technician, role=role, **fields)


def document_problem(spec: TaskSpec, task: TaskAuthorization) -> str | None:
    """How ``spec`` differs from the approver-signed ``task`` (None when the runs would be what was signed).

    Checked on the server only so that a mistake is reported at once; the agents refuse such runs anyway.
    """
    from protocol.tasks import canonical_params, script_sha256

    name = f"task authorization {task.task_id}"
    if spec.action != task.action:
        return f"{name} is for action {task.action!r}, not {spec.action!r}"
    if task.script_sha256 is not None and script_sha256(spec.script or "") != task.script_sha256:
        return f"the script's SHA-256 is not the one {name} names ({task.script_sha256})"
    if canonical_params(spec.params) != canonical_params(task.params):
        return f"the parameters differ from those {name} names: {canonical_params(task.params).decode()}"
    if (spec.cron or "").split() != (task.schedule or "").split():
        said = f"the schedule {task.schedule!r}" if task.schedule else "no schedule (it runs once)"
        return f"{name} names {said}; the task must follow it"
    return None  # a document naming technicians: each run waits for one of them's proof (server/tasks/proofs.py)
