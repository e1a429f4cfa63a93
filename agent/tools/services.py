"""systemd units through ``systemctl`` and ``journalctl`` (parsers pure, commands run with a timeout).

Without systemd as the init system (containers, this project's CI machines) every call answers
"not available: systemd is not running (PID 1 is …)" instead of systemctl's own error. The check
is sd_booted(3)'s: ``/run/systemd/system`` exists. Unit names are validated by the protocol
(never an option), passed as one argv element after ``--``, never through a shell.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from protocol.tools import MAX_JOURNAL_LINE, MAX_SERVICES, JournalLine, ServiceInfo

#: How long a systemctl/journalctl call may take (a stop can wait on a slow unit; systemd's own default is 90 s).
COMMAND_TIMEOUT_S = 100.0
#: Largest output read from a command (a list of 2000 units is about 300 KB).
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
LIST_UNITS = ["systemctl", "list-units", "--type=service", "--all", "--output=json", "--no-pager"]


class Unavailable(Exception):
    """systemd is not here, or a command failed; the message says which, for the technician."""


def systemd_problem(booted_marker: Path = Path("/run/systemd/system")) -> str:
    """"" where systemd runs the machine, else why not (naming PID 1)."""
    if booted_marker.is_dir():
        return ""
    try:
        init = psutil.Process(1).name()
    except psutil.Error:
        init = "unknown"
    return f"not available: systemd is not running (PID 1 is {init})"


def parse_units_json(text: str) -> tuple[list[ServiceInfo], bool]:
    """``systemctl list-units --output=json`` → units (at most MAX_SERVICES) and whether the list was cut."""
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Unavailable(f"systemctl printed no JSON: {exc}") from exc
    if not isinstance(rows, list):
        raise Unavailable("systemctl printed JSON that is not a list of units")
    units = [_unit(row) for row in rows if isinstance(row, dict) and isinstance(row.get("unit"), str)]
    return units[:MAX_SERVICES], len(units) > MAX_SERVICES


def parse_units_plain(text: str) -> tuple[list[ServiceInfo], bool]:
    """``systemctl list-units --plain --no-legend`` (systemd < 246 has no JSON): UNIT LOAD ACTIVE SUB DESCRIPTION."""
    units = []
    for line in text.splitlines():
        parts = line.split(None, 4)
        if len(parts) < 4:
            continue
        if parts[0] in ("●", "*"):  # failed units are marked even with --plain on some versions
            parts = line.split(None, 5)[1:]
        units.append(_unit({"unit": parts[0], "load": parts[1], "active": parts[2], "sub": parts[3],
                            "description": parts[4] if len(parts) > 4 else ""}))
    return units[:MAX_SERVICES], len(units) > MAX_SERVICES


def _unit(row: dict[str, Any]) -> ServiceInfo:
    return ServiceInfo(unit=str(row.get("unit", ""))[:256], load=str(row.get("load", ""))[:256],
                       active=str(row.get("active", ""))[:256], sub=str(row.get("sub", ""))[:256],
                       description=str(row.get("description", ""))[:256])


def parse_journal_json(text: str) -> list[JournalLine]:
    """``journalctl -o json`` (one JSON object a line) → time, priority, message; binary messages decoded."""
    lines = []
    for raw in text.splitlines():
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict):
            continue
        message = entry.get("MESSAGE", "")
        if isinstance(message, list):  # journald sends non-UTF-8 or huge messages as a byte array
            message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode("utf-8", "replace")
        try:
            ts = int(entry.get("__REALTIME_TIMESTAMP", "0")) / 1e6
            priority = min(7, max(0, int(entry.get("PRIORITY", "6"))))
        except (TypeError, ValueError):
            ts, priority = 0.0, 6
        lines.append(JournalLine(ts=max(0.0, ts), priority=priority, message=str(message or "")[:MAX_JOURNAL_LINE]))
    return lines


Runner = Callable[[list[str]], str]


def run(argv: list[str]) -> str:
    """Run a command without a shell; its stdout, or Unavailable with its stderr."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise Unavailable(f"not available: {argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"{argv[0]} did not finish within {COMMAND_TIMEOUT_S:g} s") from exc
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise Unavailable(f"{argv[0]} failed ({done.returncode}): {detail[-1] if detail else 'no message'}"[:256])
    return done.stdout[:MAX_OUTPUT_BYTES].decode("utf-8", "replace")


class Services:
    """The unit list, actions and journal; ``problem`` and ``runner`` are seams (tests, other inits)."""

    def __init__(self, problem: Callable[[], str] = systemd_problem, runner: Runner = run) -> None:
        self.problem = problem
        self.runner = runner

    def _check(self) -> None:
        reason = self.problem()
        if reason:
            raise Unavailable(reason)

    def units(self) -> tuple[list[ServiceInfo], bool]:
        self._check()
        return parse_units_json(self.runner(LIST_UNITS))

    def act(self, unit: str, action: str) -> str:
        self._check()
        self.runner(["systemctl", action, "--no-ask-password", "--", unit])
        return {"start": "started", "stop": "stopped", "restart": "restarted"}.get(action, action)

    def journal(self, unit: str, lines: int) -> list[JournalLine]:
        self._check()
        return parse_journal_json(self.runner(["journalctl", "--no-pager", "-o", "json", "-n", str(lines),
                                               "-u", unit]))
