"""Caps on connections that have not shown a request yet: the settings and the bookkeeping.

Theory of operation. A connection is *waiting* from the moment it is accepted until its first
request's headers are complete (the TLS handshake — for the agent listener the one that verifies
the device certificate — is part of that wait), and again whenever it idles between two requests
on a keep-alive connection. A request in progress (a websocket included: control channels,
session tunnels and console streams are requests that last) does not wait. Nobody is
authenticated before their headers are read, so "waiting" is the honest meaning of
"unauthenticated", and counting idle keep-alive connections too closes the gap where one cheap
public request would buy a connection a place outside every cap.

Waiting connections are bounded per source address (IPv6 by /64, which one subscriber holds) and
in all. When a cap is full, the new connection may take the place of the oldest waiting connection
it competes with — of its own address for the per-address cap, of the address holding the most
waiting connections (the heaviest) for the global one:

* if the newcomer's address holds fewer waiting connections than the heaviest one, less one, it
  always does: addresses share the global cap fairly, so a client from a light address — the real
  agent or technician beside a flood from a few addresses — is never refused for the flood's sake,
  even right after a stall let the flood's queued connections use up every stale place;
* otherwise only if that connection has waited at least ``evict_after_s``; else the newcomer is
  refused at accept (reset, nothing allocated). Idle and slowloris connections, old by nature, are
  displaced; a reconnect storm of real clients (each done in milliseconds, one per address) is
  never thrashed: young connections of equal addresses are not evicted, the surplus is refused
  cheaply and retries with backoff.

Only a flood from many addresses opening connections faster than ``cap / evict_after_s`` can still
refuse newcomers — a volumetric attack, for the network in front to absorb.

:class:`Admission` is pure (time is passed in; closing is a callback), so its rules are tested
without a network.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.config import ServerConfig

#: Descriptors kept back from the automatic global cap: listeners, the database, log and
#: recording files, the connections that are past their headers.
FD_RESERVE = 256
#: The automatic global cap never exceeds this: past it memory, not descriptors, is the limit.
AUTO_TOTAL_MAX = 4096
AUTO_TOTAL_MIN = 64


def auto_total(fd_limit: int) -> int:
    """The global cap for a descriptor limit: half of what the reserve leaves, within bounds."""
    return max(AUTO_TOTAL_MIN, min(AUTO_TOTAL_MAX, (fd_limit - FD_RESERVE) // 2))


@dataclass(frozen=True)
class ConnectionLimits:
    """The listeners' caps and timeouts (``ServerConfig`` fields of the same meaning)."""

    per_address: int = 64
    total: int = 1024
    evict_after_s: float = 1.0
    #: From accept until the TLS handshake is done.
    handshake_timeout_s: float = 5.0
    #: From accept until the first request's headers are complete, handshake included.
    header_timeout_s: float = 10.0
    #: From the end of a response until the next request's headers are complete.
    idle_timeout_s: float = 60.0
    #: TLS handshakes computing at once per listener; more wait in the listen queue (:mod:`.slots`).
    handshakes: int = 32
    #: The longest one handshake holds its slot (a stalled one computes on without it).
    handshake_hold_s: float = 1.0

    def __post_init__(self) -> None:
        if self.per_address < 1 or self.total < 1 or self.handshakes < 1:
            raise ValueError("connection caps must be at least 1")
        if self.handshake_hold_s <= 0:
            raise ValueError("handshake_hold_s must be positive")
        if min(self.handshake_timeout_s, self.header_timeout_s, self.idle_timeout_s) <= 0:
            raise ValueError("connection timeouts must be positive")
        if self.evict_after_s < 0:
            raise ValueError("evict_after_s must not be negative")

    @classmethod
    def from_config(cls, config: ServerConfig, fd_limit: int) -> ConnectionLimits:
        """The configured limits; a global cap of 0 is derived from ``fd_limit`` (:func:`auto_total`)."""
        return cls(per_address=config.max_unauthenticated_per_address,
                   total=config.max_unauthenticated or auto_total(fd_limit),
                   evict_after_s=config.unauthenticated_evict_after_s,
                   handshake_timeout_s=config.tls_handshake_timeout_s,
                   header_timeout_s=config.header_timeout_s,
                   idle_timeout_s=config.idle_timeout_s,
                   handshakes=config.tls_handshakes_in_flight,
                   handshake_hold_s=config.tls_handshake_hold_s)


def address_key(host: str) -> str:
    """The key a source address is counted under: IPv4 as is, IPv6 by its /64 (IPv4-mapped as IPv4)."""
    if ":" not in host:
        return host  # IPv4 as the kernel wrote it: canonical already (parsing cost a third of admission)
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host  # not an IP address (a Unix socket path): count it as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Refusal(enum.Enum):
    """Why a new connection was refused: whose cap was full of connections too young to evict."""

    ADDRESS_FULL = "address"
    ALL_FULL = "total"


class Waiting:
    """One waiting connection's place. ``close`` ends the connection (called on eviction)."""

    __slots__ = ("active", "close", "key", "since")

    def __init__(self, key: str, since: float, close: Callable[[], None]) -> None:
        self.key = key
        self.since = since
        self.close = close
        self.active = False


class Admission:
    """The waiting connections of a process, by address and in all (see the module docstring)."""

    def __init__(self, per_address: int, total: int, evict_after_s: float) -> None:
        self.per_address = per_address
        self.total = total
        self.evict_after_s = evict_after_s
        self._all: dict[Waiting, None] = {}  # insertion order is age order: oldest first
        self._by_key: dict[str, dict[Waiting, None]] = {}
        # Addresses by how many waiting connections they hold, to find the heaviest in O(1).
        self._keys_by_count: dict[int, dict[str, None]] = {}
        self._max_count = 0

    @classmethod
    def for_limits(cls, limits: ConnectionLimits) -> Admission:
        return cls(limits.per_address, limits.total, limits.evict_after_s)

    def __len__(self) -> int:
        return len(self._all)

    def count(self, key: str) -> int:
        return len(self._by_key.get(key, ()))

    def admit(self, key: str, now: float, close: Callable[[], None]) -> Waiting | Refusal:
        """A connection just accepted from ``key``: its place, or why it must be refused.

        May call ``close`` of one older waiting connection to make room."""
        entry = Waiting(key, now, close)
        refusal = self._place(entry, now)
        return entry if refusal is None else refusal

    def readmit(self, entry: Waiting, now: float) -> Refusal | None:
        """``entry``'s connection idles again after a request; a refusal means: close it after the response."""
        if entry.active:
            raise ValueError("the connection is waiting already")
        entry.since = now
        return self._place(entry, now)

    def release(self, entry: Waiting) -> None:
        """``entry``'s connection showed a request, or closed (idempotent)."""
        if not entry.active:
            return
        entry.active = False
        del self._all[entry]
        mine = self._by_key[entry.key]
        del mine[entry]
        self._recount(entry.key, len(mine) + 1, len(mine))
        if not mine:
            del self._by_key[entry.key]

    def _place(self, entry: Waiting, now: float) -> Refusal | None:
        mine = self._by_key.get(entry.key)
        if mine is not None and len(mine) >= self.per_address:
            if not self._evict(next(iter(mine)), now):
                return Refusal.ADDRESS_FULL
        elif len(self._all) >= self.total:
            lighter = len(mine or ()) + 1 < self._max_count
            if not self._evict(self._heaviest_oldest(), now, always=lighter):
                return Refusal.ALL_FULL
        entry.active = True
        self._all[entry] = None
        mine = self._by_key.setdefault(entry.key, {})
        mine[entry] = None
        self._recount(entry.key, len(mine) - 1, len(mine))
        return None

    def _evict(self, victim: Waiting, now: float, *, always: bool = False) -> bool:
        if not always and now - victim.since < self.evict_after_s:
            return False
        self.release(victim)
        victim.close()
        return True

    def _heaviest_oldest(self) -> Waiting:
        key = next(iter(self._keys_by_count[self._max_count]))
        return next(iter(self._by_key[key]))

    def _recount(self, key: str, old: int, new: int) -> None:
        if old:
            bucket = self._keys_by_count[old]
            del bucket[key]
            if not bucket:
                del self._keys_by_count[old]
        if new:
            self._keys_by_count.setdefault(new, {})[key] = None
        self._max_count = max(self._max_count, new)
        while self._max_count and self._max_count not in self._keys_by_count:
            self._max_count -= 1
