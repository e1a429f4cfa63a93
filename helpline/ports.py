"""Choosing a listening port for local servers (tests, benchmarks)."""

from __future__ import annotations

import os
import random
import re
import socket

#: Below Linux's ephemeral range (32768–60999): an outgoing connection can never be holding the
#: port between choosing it and binding it.
PORT_RANGE = (20000, 32000)
#: pytest-xdist workers (``PYTEST_XDIST_WORKER=gwN``) each draw from their own slice of the range, so two
#: test processes can never choose the same port between one's choice and its bind.
WORKER_SLICES = 8
#: Ports this process handed out lately are not handed out again (a caller often chooses two before binding).
_RECENT_MAX = 512
_recent: list[int] = []


def _port_range() -> tuple[int, int]:
    worker = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    if worker is None:
        return PORT_RANGE
    size = (PORT_RANGE[1] - PORT_RANGE[0]) // WORKER_SLICES
    low = PORT_RANGE[0] + (int(worker[1]) % WORKER_SLICES) * size
    return low, low + size - 1


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, outside the ephemeral range, not handed out lately by this process."""
    low, high = _port_range()
    for _ in range(200):
        port = random.randint(low, high)
        if port in _recent:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
        _recent.append(port)
        del _recent[:-_RECENT_MAX]
        return port
    raise RuntimeError(f"no free port in {low}-{high}")
