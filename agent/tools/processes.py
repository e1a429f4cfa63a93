"""Processes from psutil: the list (CPU measured between two calls, so the console's polling sees live
values) and ending one — SIGTERM, then SIGKILL after a grace. Blocking; the feature runs these in a thread."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, field

import psutil

from protocol.tools import MAX_CMDLINE, MAX_PROCESSES, ProcessInfo

_ATTRS = ["pid", "ppid", "name", "username", "memory_info", "memory_percent", "status", "create_time", "cmdline"]


class EndRefused(Exception):
    """The process cannot be ended; ``code`` is a :data:`protocol.tools.ErrorCode`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ProcessTable:
    """Keeps each psutil.Process between listings: psutil measures CPU % since that object's previous call."""

    _seen: dict[int, psutil.Process] = field(default_factory=dict)

    def snapshot(self) -> tuple[list[ProcessInfo], bool]:
        """Every process (at most MAX_PROCESSES, busiest first when cut), and whether the list was cut."""
        found: list[ProcessInfo] = []
        alive: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(_ATTRS):
            known = self._seen.get(proc.pid)
            if known is not None and known.info.get("create_time") == proc.info.get("create_time"):
                known.info = proc.info
                proc = known  # the same process: its CPU counter continues from the previous listing
            try:
                cpu = proc.cpu_percent(None)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            alive[proc.pid] = proc
            found.append(_info(proc.info, cpu))
        self._seen = alive
        truncated = len(found) > MAX_PROCESSES
        if truncated:
            found.sort(key=lambda p: (-p.cpu_percent, -p.memory_rss))
            found = found[:MAX_PROCESSES]
        return found, truncated


def _info(info: dict[str, object], cpu: float) -> ProcessInfo:
    memory = info.get("memory_info")
    cmdline = info.get("cmdline") or []
    text = " ".join(str(part) for part in cmdline) if isinstance(cmdline, list) else ""
    return ProcessInfo(
        pid=int(info["pid"]),  # type: ignore[call-overload]
        ppid=int(info.get("ppid") or 0),  # type: ignore[call-overload]
        name=str(info.get("name") or "")[:256],
        user=str(info.get("username") or "")[:256],
        cpu_percent=round(max(0.0, float(cpu)), 1),
        memory_rss=int(getattr(memory, "rss", 0) or 0),
        memory_percent=round(max(0.0, float(info.get("memory_percent") or 0.0)), 2),  # type: ignore[arg-type]
        status=str(info.get("status") or "")[:256],
        started_at=max(0.0, float(info.get("create_time") or 0.0)),  # type: ignore[arg-type]
        cmdline=text[:MAX_CMDLINE],
    )


def protected_pids() -> set[int]:
    """PID 1 and the agent with its ancestors: ending these would cut the device off or stop the agent."""
    pids = {1, os.getpid()}
    with contextlib.suppress(psutil.Error):
        pids.update(p.pid for p in psutil.Process().parents())
    return pids


def end_process(pid: int, started_at: float | None, grace_s: float) -> str:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL; what happened, in words. Raises :class:`EndRefused`."""
    if pid in protected_pids():
        raise EndRefused("denied", f"process {pid} is PID 1 or the agent itself")
    try:
        proc = psutil.Process(pid)
        if started_at is not None and abs(proc.create_time() - started_at) > 0.05:
            raise EndRefused("not_found", f"process {pid} is not the one listed (the pid was reused)")
        proc.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess as exc:
        raise EndRefused("not_found", f"no process {pid}") from exc
    except psutil.AccessDenied as exc:
        raise EndRefused("denied", f"not allowed to signal process {pid}") from exc
    _gone, alive = psutil.wait_procs([proc], timeout=grace_s)
    if not alive:
        return "ended by SIGTERM"
    try:
        proc.kill()
    except psutil.NoSuchProcess:
        return "ended by SIGTERM"
    _gone, alive = psutil.wait_procs([proc], timeout=5.0)
    if alive:
        raise EndRefused("failed", f"process {pid} survived SIGKILL for 5 s (uninterruptible?)")
    return f"killed by SIGKILL after {grace_s:g} s"
