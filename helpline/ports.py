"""Choosing a listening port for local servers (tests, benchmarks)."""

from __future__ import annotations

import random
import socket

#: Below Linux's ephemeral range (32768–60999): an outgoing connection can never be holding the
#: port between choosing it and binding it.
PORT_RANGE = (20000, 32000)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, outside the ephemeral range."""
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")
