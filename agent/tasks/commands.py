"""The command layer: every external program a task runs goes through a :class:`CommandRunner`.

Production uses :class:`ProcessRunner` (own session/process group, timeout that kills the
whole tree, capped output). Tests swap in :class:`RecordingRunner` to assert the exact argv
of a reboot or an update without running it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

log = logging.getLogger(__name__)

#: After the main process ends, how long to wait for pipes held by escaped descendants.
PIPE_DRAIN_S = 2.0


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False
    timed_out: bool = False
    pid: int | None = None


class CommandRunner(Protocol):
    async def run(self, argv: Sequence[str], *, timeout_s: float, output_cap: int,
                  env: Mapping[str, str] | None = None, cwd: Path | None = None,
                  on_start: Callable[[int], None] | None = None) -> CommandResult:
        """Run ``argv`` to completion or timeout; raise FileNotFoundError if the program is missing."""


class _CappedBuffer:
    def __init__(self, cap: int) -> None:
        self.cap, self.data, self.dropped = cap, bytearray(), 0

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))


async def _drain(stream: asyncio.StreamReader | None, buffer: _CappedBuffer) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        buffer.feed(chunk)


def kill_tree(pid: int) -> list[int]:
    """SIGKILL the process group led by ``pid`` and every descendant (also ones that left the group)."""
    victims: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        victims = psutil.Process(pid).children(recursive=True)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    killed = [pid]
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            proc.kill()
        killed.append(proc.pid)
    return killed


class ProcessRunner:
    """The real runner: one new session per command, tree killed at the timeout or on cancel."""

    async def run(self, argv: Sequence[str], *, timeout_s: float, output_cap: int,
                  env: Mapping[str, str] | None = None, cwd: Path | None = None,
                  on_start: Callable[[int], None] | None = None) -> CommandResult:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None, start_new_session=True)
        if on_start is not None:
            on_start(proc.pid)
        out, err = _CappedBuffer(output_cap), _CappedBuffer(output_cap)
        readers = asyncio.gather(_drain(proc.stdout, out), _drain(proc.stderr, err))
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), timeout=timeout_s)
        except TimeoutError:
            timed_out = True
            log.warning("task command timed out; killing its process tree",
                        extra={"argv0": argv[0], "pid": proc.pid, "timeout_s": timeout_s})
            kill_tree(proc.pid)
            await proc.wait()
        except asyncio.CancelledError:
            kill_tree(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(proc.wait())
            readers.cancel()
            raise
        # The task is over: anything it left behind in its group goes too, so pipes close.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(readers, timeout=PIPE_DRAIN_S)
        except TimeoutError:
            log.warning("a process that left the task's group still holds its output; output cut",
                        extra={"pid": proc.pid})
        return CommandResult(exit_code=proc.returncode, stdout=bytes(out.data), stderr=bytes(err.data),
                             truncated=bool(out.dropped or err.dropped), timed_out=timed_out, pid=proc.pid)


@dataclass
class RecordingRunner:
    """Test double: records argv (and env) and answers from a table instead of running anything."""

    results: dict[str, CommandResult] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    envs: list[dict[str, str] | None] = field(default_factory=list)

    def answer(self, argv_prefix: Sequence[str], result: CommandResult) -> None:
        self.results[" ".join(argv_prefix)] = result

    async def run(self, argv: Sequence[str], *, timeout_s: float, output_cap: int,
                  env: Mapping[str, str] | None = None, cwd: Path | None = None,
                  on_start: Callable[[int], None] | None = None) -> CommandResult:
        self.calls.append(list(argv))
        self.envs.append(dict(env) if env is not None else None)
        joined = " ".join(argv)
        for prefix in sorted(self.results, key=len, reverse=True):
            if joined.startswith(prefix):
                return self.results[prefix]
        return CommandResult(exit_code=0)
