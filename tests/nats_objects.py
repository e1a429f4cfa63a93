"""A real nats-server with JetStream for the object-store tests: free port, temp store dir, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def nats_server(store_dir: Path, *, timeout_s: float = 30.0) -> Iterator[str]:
    """``nats://127.0.0.1:PORT`` of a JetStream-enabled nats-server storing under ``store_dir``."""
    if not Path(NATS_SERVER).exists():
        raise RuntimeError("nats-server is missing: scripts/setup.sh installs it")
    port = _free_port()
    log = (store_dir / "nats.log").open("wb")
    proc = subprocess.Popen([NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store_dir)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {(store_dir / 'nats.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("nats-server did not listen in time")
            time.sleep(0.05)  # polling a port with a deadline, not synchronisation by sleeping
        yield f"nats://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
