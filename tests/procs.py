"""Run real ``helpline`` processes in tests and always clean them up by PID."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from helpline.ports import free_port as free_port  # re-exported for the tests

#: How tests run ``helpline``: this interpreter, this checkout.
HELPLINE = (sys.executable, "-m", "helpline")


def helpline(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
             check: bool = True, command: Sequence[str] = HELPLINE) -> subprocess.CompletedProcess[str]:
    """Run one ``helpline`` command to completion (``command``: another installation's ``helpline``)."""
    result = subprocess.run([*command, *args], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"helpline {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


@contextlib.contextmanager
def spawn(*args: str, log: Path, env: dict[str, str] | None = None,
          command: Sequence[str] = HELPLINE) -> Iterator[subprocess.Popen[bytes]]:
    """Start a long-running ``helpline`` process; terminate (then kill) it by PID on exit."""
    with log.open("ab") as out:
        proc = subprocess.Popen([*command, *args], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port} after {timeout}s")


def wait_for(predicate, timeout: float = 10, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
