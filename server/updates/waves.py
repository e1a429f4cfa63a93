"""Which device updates in which wave, and when a rollout moves on (pure: no database, no clock).

A rollout's waves are either cumulative percentages of its devices (``1, 10, 50, 100``: wave *i*
holds the devices up to ⌈p·N/100⌉ in a stable pseudo-random order seeded by the rollout id) or
explicit device groups (``[["pilot"], ["lab", "office"]]``). Wave *i + 1* is released only when every
device of wave *i* has reported ``committed`` (it reconnected on the new version), and no device of
the rollout rolled back. A rollback halts the rollout at once; refusals and failures (the device
would not or could not install) halt it when their share of the released devices exceeds the
threshold, and otherwise count as settled.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Per-device states of a rollout target (the agent's reports, plus the server's own two).
PENDING, OFFERED = "pending", "offered"
SETTLED_OK = frozenset({"committed"})
FAILED = frozenset({"refused", "failed"})
ROLLED_BACK = "rolled_back"
IN_FLIGHT = frozenset({PENDING, OFFERED, "downloading", "installed"})
STATES = frozenset({PENDING, OFFERED, "downloading", "installed", "committed", "refused", "failed", ROLLED_BACK})


class RolloutStatus(enum.StrEnum):
    RUNNING = "running"
    HALTED = "halted"
    DONE = "done"
    CANCELLED = "cancelled"


def check_percents(percents: Sequence[int]) -> None:
    """Strictly increasing, each 1..100, ending at 100; ValueError otherwise."""
    if not percents or len(percents) > 20:
        raise ValueError("give 1 to 20 wave percentages")
    if any(not 1 <= p <= 100 for p in percents) or list(percents) != sorted(set(percents)):
        raise ValueError("wave percentages must be strictly increasing, each 1..100")
    if percents[-1] != 100:
        raise ValueError("the last wave must be 100 (every device)")


def _order(seed: str, device_id: str) -> str:
    return hashlib.sha256(f"{seed}\0{device_id}".encode()).hexdigest()


def by_percent(devices: Sequence[str], percents: Sequence[int], seed: str) -> dict[str, int]:
    """Device → wave index; waves that would be empty (few devices) are skipped, so none is."""
    check_percents(percents)
    ordered = sorted(devices, key=lambda d: _order(seed, d))
    waves: dict[str, int] = {}
    start, index = 0, 0
    for percent in percents:
        end = min(len(ordered), max(start + 1, math.ceil(percent * len(ordered) / 100)))
        if end <= start:
            continue
        for device in ordered[start:end]:
            waves[device] = index
        start, index = end, index + 1
    return waves


def by_groups(devices: Sequence[tuple[str, str]], groups: Sequence[Sequence[str]]) -> dict[str, int]:
    """Device → wave index from (device, group) pairs; a device whose group no wave names is not a target."""
    if not groups or len(groups) > 20 or any(not wave for wave in groups):
        raise ValueError("give 1 to 20 waves, each naming at least one group")
    wave_of: dict[str, int] = {}
    for index, wave in enumerate(groups):
        for group in wave:
            if group in wave_of:
                raise ValueError(f"group {group!r} is in two waves")
            wave_of[group] = index
    return {device: wave_of[group] for device, group in devices if group in wave_of}


@dataclass(frozen=True)
class Target:
    device_id: str
    wave: int
    state: str
    reason: str = ""


@dataclass(frozen=True)
class Decision:
    """What the tick does with a running rollout: ``advance`` (release ``wave``), ``halt``, ``done`` or ``wait``."""

    action: str
    wave: int
    reason: str = ""


def decide(current_wave: int, last_wave: int, threshold: float, targets: Sequence[Target]) -> Decision:
    released = [t for t in targets if t.wave <= current_wave]
    rolled = [t for t in released if t.state == ROLLED_BACK]
    if rolled:
        first = rolled[0]
        return Decision("halt", current_wave, f"device {first.device_id} rolled back: {first.reason}"[:500])
    failed = [t for t in released if t.state in FAILED]
    if failed and len(failed) > threshold * len(released):
        first = failed[0]
        return Decision("halt", current_wave, (
            f"{len(failed)} of {len(released)} released devices refused or failed (threshold {threshold:g}); "
            f"{first.device_id}: {first.reason}")[:500])
    if any(t.state not in SETTLED_OK | FAILED for t in released if t.wave == current_wave):
        return Decision("wait", current_wave)
    if current_wave >= last_wave:
        return Decision("done", current_wave)
    return Decision("advance", current_wave + 1)
