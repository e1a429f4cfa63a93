"""A real nats-server for tests: a free port, JetStream on, its store in a temp dir, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.procs import free_port, wait_for_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


@dataclass
class NatsServer:
    url: str
    port: int
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def nats_server(directory: Path) -> Iterator[NatsServer]:
    """Start nats-server (fails, not skips, when it is missing: scripts/setup.sh installs it)."""
    if not Path(NATS_SERVER).exists():
        raise RuntimeError("nats-server is not installed (scripts/setup.sh installs Debian's nats-server)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (directory / "nats.log").open("wb")
    proc = subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(directory / "js")],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, timeout=30)
        yield NatsServer(f"nats://127.0.0.1:{port}", port, proc)
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process by its PID, SIGKILL it if it lingers, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
