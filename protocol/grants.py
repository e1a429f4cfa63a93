"""Unattended actions and device-local time windows, shared by signed grant and task documents (pure, no I/O).

The documents themselves (:class:`~protocol.authority.UnattendedGrant`,
:class:`~protocol.authority.TaskAuthorization`) live in :mod:`protocol.authority`; approvers sign
them and the *agent* checks signature, scope, window and validity itself. Nothing the server
signs authorizes anything on a device.

Windows are in the device's local time: ``{"days": [0..6 (Mon=0)], "start": "22:00",
"end": "06:00"}``; an end before the start wraps past midnight (the night belongs to the
day it started on).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Literal, Protocol

import msgspec

#: ``files`` and ``clipboard`` are in-session toolkit rights (protocol.toolkit): a grant for view or control
#: that does not name them gives a session without file transfer or clipboard sync.
#: ``processes`` and ``services`` (issue 16): a control session under the grant may also end processes and
#: start/stop/restart units (protocol.tools); without them it may only list.
Action = Literal["view", "control", "tasks", "files", "clipboard", "shell", "processes", "services"]
HHMM = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class Window(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    days: Annotated[list[Annotated[int, msgspec.Meta(ge=0, le=6)]], msgspec.Meta(min_length=1, max_length=7)]
    start: HHMM
    end: HHMM


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def in_window(window: Window, local: datetime) -> bool:
    """Is the device-local time ``local`` inside the window?"""
    start, end, now_min = _minutes(window.start), _minutes(window.end), local.hour * 60 + local.minute
    if start == end:
        return local.weekday() in window.days
    if start < end:
        return local.weekday() in window.days and start <= now_min < end
    # Wraps midnight: evening part belongs to today, morning part to yesterday's night.
    if now_min >= start:
        return local.weekday() in window.days
    if now_min < end:
        return (local - timedelta(days=1)).weekday() in window.days
    return False


class Windowed(Protocol):
    """Anything with device-local windows: a signed grant or task document."""

    @property
    def windows(self) -> Sequence[Window]: ...


def window_end(grant: Windowed, local: datetime) -> datetime | None:
    """When the window containing ``local`` closes (device-local), or None if there are no windows."""
    if not grant.windows:
        return None
    for window in grant.windows:
        if in_window(window, local):
            end_h, end_m = (int(x) for x in window.end.split(":"))
            end = local.replace(hour=end_h, minute=end_m, second=0, microsecond=0)
            if end <= local:
                end += timedelta(days=1)
            return end
    return local
