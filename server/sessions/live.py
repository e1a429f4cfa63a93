"""A session while it holds resources on this node: its state machine, tunnel token and relay.

The durable record is the ``sessions`` row (:mod:`.repository`); this object lives only
from the technician's request until the one finish path (:mod:`.finish`) drops it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from protocol.authority_messages import SessionChallenge
from protocol.session import SessionMachine

from .people import People
from .relay import Relay
from .tokens import TunnelToken


@dataclass
class LiveSession:
    session_id: str
    device_id: str
    group: str
    technician_user: str
    technician_role: str
    reason: str
    machine: SessionMachine
    token: TunnelToken
    #: Set (and replaced) on every change, so waiters wake up: the deadline watcher, a tunnel
    #: claim waiting for the answer.
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    relay: Relay | None = None
    refused_inputs: int = 0
    #: The finish path ran (or is running): it runs once, whichever way the session ends.
    finished: bool = False
    #: Unattended: the approver-signed grant document it names, and the agent's challenge for the technician.
    document_id: str | None = None
    challenge: SessionChallenge | None = None
    #: A proof was relayed for the challenge (one attempt per challenge).
    proof_relayed: bool = False
    #: Who watches and who controls (join and hand-off, :mod:`.people`); set when the session is requested.
    people: People = field(default_factory=lambda: People(None, []))
    #: Unattended join: the joiner the open challenge is for (only they may answer it).
    challenge_for: str | None = None
    #: Viewers whose refused input was audited already (the first refusal of each is).
    refusals_audited: set[str] = field(default_factory=set)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


#: Live sessions on this node by session id (shared by the driver and the finish path).
LiveTable = dict[str, LiveSession]
