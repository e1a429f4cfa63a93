"""Start a throw-away Xvfb server for tests and benchmarks.

``start_xvfb(width, height)`` picks a free display number (no lock file, no socket),
starts ``Xvfb :N -screen 0 WxHx24``, waits until ``xdpyinfo`` answers (with a deadline)
and returns a handle whose ``stop()`` kills exactly that PID. The ``xvfb`` fixture
wraps it for pytest. A missing Xvfb binary is an error, never a skip.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

READY_TIMEOUT_S = 30.0


class XvfbError(RuntimeError):
    """Xvfb could not be started."""


@dataclass
class XvfbHandle:
    """A running Xvfb: its display name (":N"), PID and size."""

    display: str
    pid: int
    width: int
    height: int
    _proc: subprocess.Popen[bytes] = field(repr=False)

    def env(self) -> dict[str, str]:
        """A copy of os.environ pointing at this display (for subprocesses)."""
        return {**os.environ, "DISPLAY": self.display}

    def stop(self) -> None:
        """Kill this Xvfb by PID and reap it; safe to call twice."""
        if self._proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self._proc.wait(timeout=5)


def _display_free(n: int) -> bool:
    return not os.path.exists(f"/tmp/.X{n}-lock") and not os.path.exists(f"/tmp/.X11-unix/X{n}")


def _ready(display: str) -> bool:
    try:
        result = subprocess.run(["xdpyinfo", "-display", display], capture_output=True, timeout=5, check=False)
    except subprocess.TimeoutExpired:  # a loaded box: the server is still starting; the caller's deadline rules
        return False
    return result.returncode == 0


def start_xvfb(width: int = 1024, height: int = 768, *, extra_args: tuple[str, ...] = ()) -> XvfbHandle:
    """Start Xvfb on a free display and wait until it accepts connections."""
    binary = shutil.which("Xvfb")
    if binary is None:
        raise XvfbError("Xvfb is not installed (apt-get install xvfb)")
    if shutil.which("xdpyinfo") is None:
        raise XvfbError("xdpyinfo is not installed (apt-get install x11-utils)")
    last_error = ""
    for _attempt in range(20):
        n = random.randint(100, 4000)
        if not _display_free(n):
            continue
        display = f":{n}"
        proc = subprocess.Popen(
            [binary, display, "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp", "-noreset", *extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last_error = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
                break
            if _ready(display):
                if proc.stderr:
                    proc.stderr.close()  # never read again: don't let a full pipe block Xvfb
                return XvfbHandle(display, proc.pid, width, height, proc)
            time.sleep(0.05)  # polling interval, not synchronization
        else:
            XvfbHandle(display, proc.pid, width, height, proc).stop()
            last_error = f"{display} not ready within {READY_TIMEOUT_S}s"
    raise XvfbError(f"could not start Xvfb: {last_error}")


@pytest.fixture
def xvfb_factory() -> Iterator[Callable[..., XvfbHandle]]:
    """Start any number of Xvfb servers; all are killed by PID at teardown."""
    started: list[XvfbHandle] = []

    def factory(width: int = 1024, height: int = 768) -> XvfbHandle:
        handle = start_xvfb(width, height)
        started.append(handle)
        return handle

    yield factory
    for handle in started:
        handle.stop()


@pytest.fixture
def xvfb(xvfb_factory: Callable[..., XvfbHandle]) -> XvfbHandle:
    """One 1024x768 Xvfb for this test."""
    return xvfb_factory(1024, 768)
