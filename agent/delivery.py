"""How the health drain shapes its batches and answers refusals, so one bad sample never blocks it.

Sans-I/O: :class:`DrainPlan` is told what is pending and how each batch was answered, and says
what to send next. No clock, no outbox, no socket — :mod:`agent.reporting` does those.

* A batch holds at most ``max_samples`` samples and ``max_bytes`` of metrics (always at least
  one sample), so a backlog of large samples never makes a message the channel must refuse
  (over ``limits.MAX_CONTROL_MESSAGE_BYTES`` the server closes the channel; the agent would
  reconnect and send the same batch again).
* ``health.ack``: done (refused samples named in it are already covered by its ``up_to``).
  After a bisection, batches are full size again once past the last refused batch.
* ``error`` with a content code (``invalid``, ``too_large``, ``malformed``: the server cannot
  take something in this batch — an older server refusing whole batches, a sample that does not
  even decode): gaps and samples → send the gaps alone; gaps alone → give them up; several
  samples → halve the batch; one sample → give it up. About log2(500) ≈ 9 refusals isolate one
  bad sample among 500, each answered at once.
* any other ``error`` (``internal``, the database down …): nothing is wrong with the batch;
  send it again later (the caller waits).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from protocol import limits

#: Error codes that blame the batch's content, not the server's state.
CONTENT_CODES = frozenset({"invalid", "too_large", "malformed"})


class Verdict(enum.Enum):
    """What to do after an ``error`` reply to a batch."""

    RETRY_NOW = "retry_now"  # a smaller batch (or the gaps alone) at once
    RETRY_LATER = "retry_later"  # the server's trouble: the same batch after a delay
    DROP_SAMPLE = "drop_sample"  # the batch's only sample is refused: delete it
    DROP_GAPS = "drop_gaps"  # the gaps sent alone are refused: delete them


@dataclass(frozen=True)
class Shape:
    """The next batch: how many of the oldest pending samples, and whether the gaps go with them."""

    samples: int
    gaps: bool


@dataclass
class DrainPlan:
    max_samples: int = limits.MAX_HEALTH_BATCH
    max_bytes: int = limits.MAX_HEALTH_BATCH_BYTES
    #: The reduced batch size while isolating a refused sample (None: full size) …
    limit: int | None = field(default=None)
    #: … kept until the oldest pending seq is past the last refused batch.
    _suspect_until: int = field(default=-1)
    _gaps_only: bool = field(default=False)

    def shape(self, pending: Sequence[tuple[int, int]], have_gaps: bool) -> Shape:
        """The next batch from the (seq, metrics bytes) of the oldest pending samples, in seq order."""
        if self._gaps_only and have_gaps:
            return Shape(0, True)
        self._gaps_only = False
        if self.limit is not None and (not pending or pending[0][0] > self._suspect_until):
            self.limit = None
        count, total = 0, 0
        for _seq, size in pending[:self.limit or self.max_samples]:
            if count and total + size > self.max_bytes:
                break
            count += 1
            total += size
        return Shape(count, have_gaps and self.limit is None)

    def refused(self, sent: Shape, code: str, last_seq: int = -1) -> Verdict:
        """The last batch (its newest sample ``last_seq``) got an ``error`` with ``code``."""
        if code not in CONTENT_CODES:
            return Verdict.RETRY_LATER
        if sent.gaps and sent.samples:
            self._gaps_only = True
            return Verdict.RETRY_NOW
        if sent.gaps:
            self._gaps_only = False
            return Verdict.DROP_GAPS
        if sent.samples > 1:
            self.limit = max(1, sent.samples // 2)
            self._suspect_until = last_seq
            return Verdict.RETRY_NOW
        return Verdict.DROP_SAMPLE
