"""Statuses of tasks, runs and rollouts, and the only ways a run's status may change.

Theory of operation
-------------------
A *run* (one execution of a task on one device) is created ``held`` (a later wave, not yet
released) or ``queued``; the scheduler delivers a queued run (``sent``); the agent may hold it
for its grant window (``waiting``) and reports a result (``succeeded``, ``failed``,
``timed_out``, ``refused`` or ``cancelled``). A run never delivered ends ``missed`` (the
device was offline through its window and the task says so), ``skipped`` (a recurring
occurrence in waves moved on without it; not a failure) or ``cancelled`` (by an admin, or by a
rollout stopped at its failure threshold)::

    held ──▶ queued ──▶ sent ──▶ waiting
     │         │ │        │         │
     │         │ └────────┴────┬────┘
     ▼         ▼               ▼
  cancelled  missed | skipped | cancelled   result: succeeded | failed | timed_out | refused | cancelled

All moves live in :data:`TRANSITIONS`. Every status update in SQL is conditional on the run
still being in a status that may move to the new one (:func:`sources`), so an illegal move is
refused in that one place: the update changes nothing, whatever another node did meanwhile.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class RunStatus(enum.StrEnum):
    HELD = "held"
    QUEUED = "queued"
    SENT = "sent"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    REFUSED = "refused"
    CANCELLED = "cancelled"
    MISSED = "missed"
    SKIPPED = "skipped"


#: What an agent may report for a run it received (``protocol.tasks.Status``).
RESULTS = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.REFUSED,
                     RunStatus.CANCELLED})

TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.HELD: frozenset({RunStatus.QUEUED, RunStatus.CANCELLED}),
    # A fast agent may answer before the server has marked the run sent.
    RunStatus.QUEUED: frozenset({RunStatus.SENT, RunStatus.WAITING, RunStatus.MISSED, RunStatus.SKIPPED}) | RESULTS,
    RunStatus.SENT: frozenset({RunStatus.WAITING}) | RESULTS,
    RunStatus.WAITING: RESULTS,
    **{final: frozenset() for final in RESULTS | {RunStatus.MISSED, RunStatus.SKIPPED}},
}

#: Statuses a run is created in.
INITIAL = frozenset({RunStatus.HELD, RunStatus.QUEUED})
#: Runs not finished yet (a device has at most one open run per task).
OPEN = frozenset(s for s, moves in TRANSITIONS.items() if moves)
FINAL = frozenset(s for s, moves in TRANSITIONS.items() if not moves)
FAILURES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.REFUSED, RunStatus.MISSED})
#: Final statuses that count neither as success nor as failure in a rollout's failure rate.
NEUTRAL = frozenset({RunStatus.CANCELLED, RunStatus.SKIPPED})


def sources(new: RunStatus) -> frozenset[RunStatus]:
    """The statuses a run may be in to move to ``new``."""
    return frozenset(s for s, moves in TRANSITIONS.items() if new in moves)


def check(old: RunStatus, new: RunStatus) -> None:
    """Refuse a move the table does not list (our bug, not the client's: a ValueError)."""
    if new not in TRANSITIONS[old]:
        raise ValueError(f"a task run cannot go from {old} to {new}")


def is_final(status: str) -> bool:
    return status in FINAL


def failure_rate(statuses: Iterable[str]) -> float:
    """Failures among finished runs (cancelled and skipped ones do not count either way)."""
    finished = [s for s in statuses if s in FINAL and s not in NEUTRAL]
    if not finished:
        return 0.0
    return sum(1 for s in finished if s in FAILURES) / len(finished)


class TaskStatus(enum.StrEnum):
    #: More devices than the approval threshold: waits for a second admin.
    PENDING_APPROVAL = "pending_approval"
    ACTIVE = "active"
    #: A recurring schedule whose occurrence stopped at the failure threshold; an admin resumes it.
    PAUSED = "paused"
    CANCELLED = "cancelled"


#: How a task's own status may change: approval, a stopped occurrence pausing a schedule, resume, cancel.
TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING_APPROVAL: frozenset({TaskStatus.ACTIVE, TaskStatus.CANCELLED}),
    TaskStatus.ACTIVE: frozenset({TaskStatus.PAUSED, TaskStatus.CANCELLED}),
    TaskStatus.PAUSED: frozenset({TaskStatus.ACTIVE, TaskStatus.CANCELLED}),
    TaskStatus.CANCELLED: frozenset(),
}


def check_task(old: TaskStatus, new: TaskStatus) -> None:
    if new not in TASK_TRANSITIONS[old]:
        raise ValueError(f"a task cannot go from {old} to {new}")


class RolloutStatus(enum.StrEnum):
    RUNNING = "running"
    #: The failure rate passed the threshold; held runs were cancelled.
    STOPPED = "stopped"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
