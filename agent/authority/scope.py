"""Does a verified document apply here and now? Pure checks on the body, after the chain verified.

:func:`certs.authority.verify_chain` says a document is authentic, approved, not revoked and
not expired; what it leaves to the device is *scope*: this device or its group, this action,
its not-before and its device-local windows. Nothing here reads a clock or a file.
"""

from __future__ import annotations

import math
from datetime import datetime

from certs.authority import when
from protocol.authority import (
    ApproverSetChange,
    Body,
    ReleaseManifest,
    UnattendedGrant,
)
from protocol.grants import in_window, window_end


def concerns(body: Body, *, device_id: str, group: str) -> bool:
    """Is ``body`` about this device (listed, or its group listed)? Releases and approver sets are for all."""
    if isinstance(body, ReleaseManifest | ApproverSetChange):
        return True
    return device_id in body.devices or (bool(group) and group in body.groups)


def grant_problem(grant: UnattendedGrant, *, device_id: str, group: str, action: str, now: float,
                  local: datetime) -> str | None:
    """Why ``grant`` does not let ``action`` happen on this device now (None when it does)."""
    name = f"grant {grant.grant_id}"
    if not math.isfinite(now):
        return "the clock is not a finite number"
    if now < grant.not_before:
        return f"{name} is not valid before {when(grant.not_before)}"
    if now >= grant.not_after:
        return f"{name} expired at {when(grant.not_after)}"
    if not concerns(grant, device_id=device_id, group=group):
        return f"{name} does not cover this device"
    if action not in grant.actions:
        return f"{name} does not allow {action!r}"
    if grant.windows and not any(in_window(w, local) for w in grant.windows):
        return f"outside {name}'s time windows"
    return None


def grant_deadline(grant: UnattendedGrant, now: float, local: datetime) -> float:
    """Epoch seconds at which a session under ``grant`` must end: expiry or the end of its window."""
    end = grant.not_after
    closes = window_end(grant, local)
    if closes is not None:
        end = min(end, now + (closes - local).total_seconds())
    return end

