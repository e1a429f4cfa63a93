"""The part of the authority every device's update shares, read once for many devices.

A device's update is the org's chain, certificates, newest revocation list and hand-over, plus the open
documents that concern it — six queries and up to 1,000 document rows decoded, the same for every
device. Read per device, a node taking back a killed node's agents (issue 20) or pushing one change to
thousands of connected devices read it thousands of times over. Here it is read once, kept until the next
``authority.changed`` event (:meth:`SnapshotCache.invalidate`, called before any push of that change is
built) and at most :data:`MAX_AGE_S` in any case, so a missed event costs seconds, not correctness: the
agent verifies every signature itself, and every change is pushed again after it is invalidated.

A read that began before an invalidation is returned to its own caller but not kept: that caller's
device is connected by then, so the change's push (built after, under the same connection lock) follows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from protocol.authority import RootInfo, RootRotation, SignedCert, SignedDocument, SignedRevocationList
from protocol.authority_messages import MAX_CERTS
from protocol.legacy import LegacyHandover

from ..store import Database, Row
from . import repository

#: The longest a snapshot serves without an event saying it changed (seconds).
MAX_AGE_S = 2.0


@dataclass(frozen=True)
class Snapshot:
    """The shared part of every device's authority update, as stored when read."""

    root: RootInfo | None
    rotations: list[RootRotation]
    certs: list[SignedCert]
    revocations: SignedRevocationList | None
    handover: LegacyHandover | None
    #: Each open document's row (who it concerns, its status) with its signed form, newest first.
    documents: list[tuple[Row, SignedDocument | None]]


async def read(db: Database) -> Snapshot:
    chain = await repository.chain(db)
    documents = [(row, repository.signed_of(row) if row["status"] != "withdrawn" and repository.approvals_of(row)
                  else None) for row in await repository.list_documents(db)]
    return Snapshot(root=chain.origin, rotations=chain.rotations, certs=(await repository.certs(db))[-MAX_CERTS:],
                    revocations=await repository.latest_revocations(db),
                    handover=await repository.latest_handover(db), documents=documents)


class SnapshotCache:
    """One :class:`Snapshot` for all the devices of a node, read by the first that needs it."""

    def __init__(self, max_age_s: float = MAX_AGE_S) -> None:
        self.max_age_s = max_age_s
        self._kept: tuple[float, Snapshot] | None = None
        self._generation = 0
        self._reading = asyncio.Lock()
        #: Reads made (for tests and metrics: one per change, not one per device).
        self.reads = 0

    def invalidate(self) -> None:
        """The authority changed: the next update is read afresh (and a read under way is not kept)."""
        self._generation += 1
        self._kept = None

    def _fresh(self) -> Snapshot | None:
        if self._kept is not None and time.monotonic() - self._kept[0] < self.max_age_s:
            return self._kept[1]
        return None

    async def get(self, db: Database) -> Snapshot:
        kept = self._fresh()
        if kept is not None:
            return kept
        async with self._reading:  # a herd of devices waits for one read instead of making one each
            kept = self._fresh()
            if kept is not None:
                return kept
            generation, began = self._generation, time.monotonic()
            snapshot = await read(db)
            self.reads += 1
            if generation == self._generation:
                self._kept = (began, snapshot)
            return snapshot
