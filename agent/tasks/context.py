"""What an action gets to work with, and what it hands back."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .commands import CommandRunner


@dataclass
class ActionContext:
    run_id: str
    runner: CommandRunner
    state_dir: Path
    timeout_s: float
    output_cap: int
    #: Directory sets the clear_temp action may empty, by name (overridable in tests).
    temp_targets: dict[str, list[Path]] = field(default_factory=dict)
    #: Who is logged in (for the reboot notice); psutil in production.
    logged_in_users: Callable[[], list[str]] = list
    #: Finds a program on PATH (package-manager detection).
    which: Callable[[str], str | None] = lambda _name: None
    clock: Callable[[], float] = time.time
    started_pids: list[int] = field(default_factory=list)

    def remaining(self, started: float) -> float:
        """Seconds left of this task's timeout (at least one)."""
        return max(1.0, self.timeout_s - (self.clock() - started))


@dataclass
class Outcome:
    status: str  # succeeded | failed | timed_out
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    #: A file to upload to the server after the result (the diagnostics bundle).
    artifact: Path | None = None


def text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
