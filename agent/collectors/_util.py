"""Shared helpers for collectors: bounded subprocess calls, sysfs reads, ISO timestamps.

Collectors never raise for a missing source; they turn failures into a reason string that
ends up in the section's ``"unavailable"`` dict.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class CommandResult:
    """Outcome of one command: ``stdout`` when it ran, else ``reason`` saying why not."""

    stdout: str | None
    returncode: int | None
    reason: str | None
    stderr: str = ""


def run_command(
    argv: list[str], *, timeout: float = DEFAULT_TIMEOUT_S, ok_codes: tuple[int, ...] = (0,)
) -> CommandResult:
    """Run ``argv`` without a shell, bounded by ``timeout``; never raises for the usual failures."""
    binary = shutil.which(argv[0])
    if binary is None:
        return CommandResult(None, None, f"{argv[0]} not found on PATH")
    try:
        proc = subprocess.run(
            [binary, *argv[1:]],
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired:
        log.warning("command timed out after %.1fs: %s", timeout, argv)
        return CommandResult(None, None, f"{argv[0]} timed out after {timeout:g}s")
    except OSError as exc:
        log.warning("command failed to start: %s: %s", argv, exc)
        return CommandResult(None, None, f"{argv[0]} failed to start: {exc}")
    stdout = proc.stdout.decode("utf-8", errors="replace")
    stderr = proc.stderr.decode("utf-8", errors="replace")
    if proc.returncode not in ok_codes:
        first = stderr.strip().splitlines()[0] if stderr.strip() else ""
        return CommandResult(
            stdout, proc.returncode, f"{argv[0]} exited with {proc.returncode}: {first}".rstrip(": "), stderr
        )
    return CommandResult(stdout, proc.returncode, None, stderr)


def read_text(path: str | Path) -> tuple[str | None, str | None]:
    """Read a small text file stripped; return ``(value, None)`` or ``(None, reason)``."""
    try:
        value = Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except PermissionError:
        return None, f"permission denied reading {path}"
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}"
    if not value:
        return None, f"{path} is empty"
    return value, None


def iso_utc(timestamp: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC with a ``Z`` suffix, to the second."""
    return datetime.fromtimestamp(timestamp, UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
