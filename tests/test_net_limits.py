"""Rules of the caps on unauthenticated connections (server/net/limits.py), the counting log and the
descriptor limit, without a network. The listeners under a real flood: tests/test_connection_hygiene.py."""

from __future__ import annotations

import asyncio
import logging
import resource
import subprocess
import sys

import pytest

from server.net.limits import Admission, ConnectionLimits, Refusal, Waiting, address_key, auto_total
from server.net.ratelog import CountingLog


class Closed(list[str]):
    def closer(self, name: str):  # type: ignore[no-untyped-def]
        return lambda: self.append(name)


def admit(admission: Admission, closed: Closed, name: str, key: str, now: float) -> Waiting | Refusal:
    return admission.admit(key, now, closed.closer(name))


def test_per_address_cap_refuses_young_and_evicts_stale() -> None:
    """A full address refuses newcomers while its connections are young, then the oldest makes room."""
    admission, closed = Admission(per_address=2, total=100, evict_after_s=1.0), Closed()
    assert isinstance(admit(admission, closed, "a1", "10.0.0.1", 0.0), Waiting)
    assert isinstance(admit(admission, closed, "a2", "10.0.0.1", 0.5), Waiting)
    assert admit(admission, closed, "a3", "10.0.0.1", 0.9) is Refusal.ADDRESS_FULL
    assert isinstance(admit(admission, closed, "b1", "10.0.0.2", 0.9), Waiting)  # other addresses unaffected
    assert isinstance(admit(admission, closed, "a4", "10.0.0.1", 1.2), Waiting)
    assert closed == ["a1"] and admission.count("10.0.0.1") == 2 and len(admission) == 3


def test_global_cap_evicts_from_the_heaviest_address() -> None:
    """With the global cap full, the victim is the oldest connection of the address holding the most, so a
    flood displaces itself and not the lone client that came first; a newcomer from a lighter address gets
    in even when the flood's connections are all young."""
    admission, closed = Admission(per_address=10, total=4, evict_after_s=1.0), Closed()
    admit(admission, closed, "lone", "192.0.2.1", 0.0)
    for i in range(3):
        admit(admission, closed, f"flood{i}", "198.51.100.7", 0.1 + i * 0.1)
    assert isinstance(admit(admission, closed, "new", "203.0.113.5", 0.5), Waiting)
    assert closed == ["flood0"] and admission.count("192.0.2.1") == 1 and admission.count("198.51.100.7") == 2


def test_equal_addresses_evict_only_stale_connections() -> None:
    """Among addresses holding as many waiting connections (a reconnect storm, one per device), a full global
    cap refuses newcomers while everyone is young — no thrashing — and displaces the oldest once stale."""
    admission, closed = Admission(per_address=10, total=4, evict_after_s=1.0), Closed()
    for i in range(4):
        admit(admission, closed, f"device{i}", f"10.1.0.{i}", i * 0.1)
    assert admit(admission, closed, "young", "10.1.0.9", 0.5) is Refusal.ALL_FULL
    assert isinstance(admit(admission, closed, "later", "10.1.0.9", 1.05), Waiting)
    assert closed == ["device0"]


def test_release_and_readmit() -> None:
    """A request releases the place (idempotently); after the response the connection waits again, as the
    newest, taking a stale connection's place if the cap is full."""
    admission, closed = Admission(per_address=2, total=100, evict_after_s=1.0), Closed()
    first = admit(admission, closed, "first", "10.0.0.1", 0.0)
    assert isinstance(first, Waiting)
    admission.release(first)
    admission.release(first)
    assert len(admission) == 0
    admit(admission, closed, "x", "10.0.0.1", 0.0)
    admit(admission, closed, "y", "10.0.0.1", 0.1)
    assert admission.readmit(first, 5.0) is None
    assert closed == ["x"] and admission.count("10.0.0.1") == 2
    with pytest.raises(ValueError):
        admission.readmit(first, 6.0)


def test_counts_stay_consistent_under_churn() -> None:
    """Admitting, evicting and releasing thousands of connections leaves exact counts and the heaviest
    address found correctly."""
    admission, closed = Admission(per_address=5, total=50, evict_after_s=0.0), Closed()
    live: list[Waiting] = []
    for i in range(5000):
        place = admit(admission, closed, str(i), f"10.0.{i % 37}.{i % 3}", float(i))
        assert isinstance(place, Waiting)
        live.append(place)
        if i % 7 == 0:
            admission.release(live[i // 2])
    assert len(admission) <= 50
    active = [w for w in live if w.active]
    assert len(active) == len(admission)
    assert max(admission.count(w.key) for w in active) <= 5


def test_address_keys() -> None:
    """IPv4 as is, IPv4-mapped IPv6 as IPv4, IPv6 by /64."""
    assert address_key("192.0.2.1") == "192.0.2.1"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")


def test_automatic_global_cap() -> None:
    """The automatic cap follows the descriptor limit within its bounds; invalid limits are refused."""
    assert auto_total(1024) == 384
    assert auto_total(300) == 64
    assert auto_total(1 << 20) == 4096
    with pytest.raises(ValueError):
        ConnectionLimits(per_address=0)
    with pytest.raises(ValueError):
        ConnectionLimits(header_timeout_s=0)


def test_counting_log_writes_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """10,000 events make the first line at once and then one line with the count per interval."""
    logger = logging.getLogger("test.counting")

    class Second(logging.Handler):
        def __init__(self, event: asyncio.Event) -> None:
            super().__init__()
            self.event, self.seen = event, 0

        def emit(self, record: logging.LogRecord) -> None:
            self.seen += 1
            if self.seen == 2:
                self.event.set()

    async def burst() -> CountingLog:
        counting = CountingLog(logger, "accept() failed", interval_s=0.2)
        second = Second(asyncio.Event())
        logger.addHandler(second)
        try:
            for _ in range(10_000):
                counting.note("EMFILE", "[Errno 24] Too many open files")
            await asyncio.wait_for(second.event.wait(), 10)  # the interval's line
        finally:
            logger.removeHandler(second)
        counting.note("EMFILE")
        counting.close()
        return counting

    with caplog.at_level(logging.WARNING, logger="test.counting"):
        counting = asyncio.run(burst())
    records = [r for r in caplog.records if r.name == "test.counting"]
    assert [getattr(r, "EMFILE", None) for r in records] == [1, 9999, 1]
    assert records[1].last == "[Errno 24] Too many open files"  # type: ignore[attr-defined]
    assert counting.total["EMFILE"] == 10_001


def test_fd_limit_raised_to_hard_and_warned_when_low() -> None:
    """At start the soft limit goes up to the hard one; a low hard limit is warned about, saying why."""
    code = ("import logging, resource, sys; logging.basicConfig(stream=sys.stdout, level=logging.INFO, "
            "format='%(levelname)s %(message)s'); from server.net import raise_fd_limit; "
            "print('limit', raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")

    def run(soft: int, hard: int) -> str:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              preexec_fn=limit, timeout=60).stdout

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard >= 1024
    low = run(256, 1024)
    assert "limit 1024 1024" in low and "WARNING the file-descriptor limit is 1024" in low and "LimitNOFILE" in low
    if hard >= 8192:
        high = run(256, 8192)
        assert "limit 8192 8192" in high and "WARNING" not in high
