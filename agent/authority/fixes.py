"""The run ledger of self-service fixes: when each fix ran on this device, so its signed budget holds.

A :class:`~protocol.authority.SelfServiceFix` lets the person at the device start it at most
``budget.max_runs`` times within any ``budget.per_seconds``. The count must survive a restart of
the agent, or restarting it would refill the budget; so every run is written here before it
starts. ``<state>/authority/fix-runs.json`` (0600), written atomically; an unreadable ledger
refuses every fix (fail closed) rather than forgetting the runs it held.

Runs recorded later than "now" (the clock was set back) still count against the budget.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

from common.files import atomic_write
from protocol.authority import SelfServiceFix, Verdict, check_run_budget

log = logging.getLogger(__name__)

#: Fixes tracked at once; the one whose last run is oldest is forgotten first.
MAX_FIXES = 1024


class LedgerUnreadable(Exception):
    """The ledger exists but cannot be read: no fix may run until an administrator looks at it."""


class FixLedger:
    """Start times of each fix's runs, by fix id."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, list[float]]:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=dict[str, list[float]])
        except FileNotFoundError:
            return {}
        except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise LedgerUnreadable(f"the fix run ledger {self.path} is unreadable: {exc}") from exc

    def runs(self, fix_id: str) -> list[float]:
        return list(self._load().get(fix_id, []))

    def take(self, fix: SelfServiceFix, now: float) -> Verdict:
        """One run of ``fix`` now, if its budget allows (then it is recorded before this returns)."""
        try:
            ledger = self._load()
        except LedgerUnreadable as exc:
            return Verdict.refuse(str(exc))
        past = [min(t, now) for t in ledger.get(fix.fix_id, [])]
        verdict = check_run_budget(fix, past, now)
        if not verdict.allowed:
            return verdict
        window_start = now - fix.budget.per_seconds
        recent = [t for t in ledger.get(fix.fix_id, []) if t > window_start]
        ledger[fix.fix_id] = [*recent[-fix.budget.max_runs:], now]
        if len(ledger) > MAX_FIXES:
            oldest = sorted(ledger, key=lambda k: max(ledger[k], default=0.0))
            for fix_id in oldest[:len(ledger) - MAX_FIXES]:
                del ledger[fix_id]
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.path, msgspec.json.encode(ledger), 0o600)
        return verdict
