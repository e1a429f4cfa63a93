"""Admission control for TLS handshakes: a bounded number in progress, the rest wait in the listen queue.

Theory of operation. A TLS handshake with a client certificate costs a few milliseconds of CPU on
the server; asyncio starts every accepted connection's handshake at once and interleaves them. When
a node loses its peer and thousands of agents reconnect within a second, thousands of handshakes
progress together, each at a thousandth of the speed, and most pass the handshake deadline (5 s) on a
loaded machine: all that CPU is wasted, every failure doubles that agent's backoff, and the herd never
drains (6,000 agents on three nodes: ~330 of a killed node's 1,994 back after 180 s).

So a listener lets at most ``size`` handshakes compute at once. A connection takes a slot only once
its ClientHello has arrived (the socket is readable): an idle connection from a flood costs no CPU and
takes none, so it cannot hold the gate shut (the waiting caps and timers of :mod:`.limits` deal with
it). Slotless connections wait here in order; while any wait, the listener stops accepting, so the
herd waits in the kernel's listen queue — where no deadline of ours runs and the clients' own connect
timeouts (15 s for the agent) apply — instead of being accepted, timed out and reset.

A slot is held until the handshake ends or for at most ``hold_s``: a client that sends a ClientHello
and then stalls (or a very slow network) cannot keep the gate shut for the whole handshake deadline,
so holding the listener costs an attacker ``size / hold_s`` such connections a second, and real
handshakes still get CPU past it.

Pure bookkeeping with futures and a callback: tested without a network (tests/test_net_slots.py).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class Slot:
    """One handshake's slot; :meth:`release` is idempotent (handshake end and the hold timer race)."""

    __slots__ = ("_owner", "_timer", "released")

    def __init__(self, owner: HandshakeSlots) -> None:
        self._owner = owner
        self._timer: asyncio.TimerHandle | None = None
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._owner._freed()


class HandshakeSlots:
    """At most ``size`` slots held; ``on_contention(True)`` when someone starts waiting, ``(False)`` when
    no one waits any more (the listener pauses and resumes accepting on these)."""

    def __init__(self, size: int, hold_s: float, on_contention: Callable[[bool], None]) -> None:
        if size < 1 or hold_s <= 0:
            raise ValueError("handshake slots must be at least 1 and held for a positive time")
        self.size = size
        self.hold_s = hold_s
        self._on_contention = on_contention
        self.held = 0
        self._waiters: deque[asyncio.Future[Slot]] = deque()
        self._contended = False
        #: Connections that had to wait for a slot, since start (a figure for the benchmark and metrics).
        self.waited_total = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> Slot:
        """A slot, at once if one is free, else after everyone who waited before (FIFO)."""
        if self.held < self.size and not self._waiters:
            return self._grant()
        future: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self.waited_total += 1
        self._contention(True)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                future.result().release()  # granted and cancelled in the same turn: give it back
            else:
                self._drop_waiter(future)
            raise

    def _grant(self) -> Slot:
        self.held += 1
        slot = Slot(self)
        slot._timer = asyncio.get_running_loop().call_later(self.hold_s, slot.release)
        return slot

    def _freed(self) -> None:
        self.held -= 1
        while self._waiters and self.held < self.size:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(self._grant())
        if not self._waiters:
            self._contention(False)

    def _contention(self, now: bool) -> None:
        if now != self._contended:
            self._contended = now
            self._on_contention(now)

    def _drop_waiter(self, future: asyncio.Future[Slot]) -> None:
        try:
            self._waiters.remove(future)
        except ValueError:
            return
        if not self._waiters:
            self._contention(False)
