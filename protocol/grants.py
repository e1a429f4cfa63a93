"""Unattended-access grants: the signed document and its scope rules (pure, no I/O).

A grant authorizes sessions or tasks on devices nobody is sitting at. It is signed with the
org's Ed25519 grant key (see :mod:`certs.grants`); the *agent* checks signature, scope,
window and validity itself, so a compromised relay cannot invent or stretch one.

Windows are in the device's local time: ``{"days": [0..6 (Mon=0)], "start": "22:00",
"end": "06:00"}``; an end before the start wraps past midnight (the night belongs to the
day it started on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal, Protocol

import msgspec

from . import limits

Action = Literal["view", "control", "tasks"]
HHMM = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_SHORT_STR)]
SmallList = msgspec.Meta(max_length=256)


class Window(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    days: Annotated[list[Annotated[int, msgspec.Meta(ge=0, le=6)]], msgspec.Meta(min_length=1, max_length=7)]
    start: HHMM
    end: HHMM


class Grant(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    grant_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
    #: Scope: listed device ids and/or device groups (at least one of the two non-empty).
    devices: Annotated[list[Name], SmallList] = []
    groups: Annotated[list[Name], SmallList] = []
    #: Who may use it: usernames and/or roles.
    technicians: Annotated[list[Name], SmallList] = []
    roles: Annotated[list[Name], SmallList] = []
    actions: Annotated[list[Action], msgspec.Meta(min_length=1, max_length=3)]
    #: Empty = any time within not_before..not_after.
    windows: Annotated[list[Window], msgspec.Meta(max_length=32)] = []
    not_before: float
    not_after: float
    issuer: Name
    approver: Name | None = None
    issued_at: float
    reason: Annotated[str, msgspec.Meta(max_length=limits.MAX_SHORT_STR)] = ""


class SignedGrant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What travels: the grant's canonical JSON (exact bytes that were signed) and the signature."""

    document: Annotated[str, msgspec.Meta(max_length=64 * 1024)]
    signature: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9+/=]{40,200}$")]


_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder(Grant)


def canonical_bytes(grant: Grant) -> bytes:
    """The exact bytes that are signed: sorted-key compact JSON."""
    return _encoder.encode(grant)


def parse_document(document: str) -> Grant:
    """Decode a grant document; raises ``msgspec.ValidationError``/``DecodeError`` on bad input."""
    return _decoder.decode(document.encode())


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


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
    """Anything with device-local windows: a :class:`Grant`, or an approver-signed grant document."""

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


def evaluate(grant: Grant, *, device_id: str, group: str, technician: str, role: str, action: Action,
             now: float, local: datetime, revoked: bool = False) -> Decision:
    """Does this (already signature-checked) grant allow ``action`` right now? Says why not."""
    if revoked:
        return Decision(False, "grant has been revoked")
    if now < grant.not_before:
        return Decision(False, "grant is not valid yet")
    if now >= grant.not_after:
        return Decision(False, "grant has expired")
    if device_id not in grant.devices and group not in grant.groups:
        return Decision(False, "grant does not cover this device")
    if technician not in grant.technicians and role not in grant.roles:
        return Decision(False, f"grant does not name technician {technician!r}")
    if action not in grant.actions:
        return Decision(False, f"grant does not allow {action!r}")
    if grant.windows and not any(in_window(w, local) for w in grant.windows):
        return Decision(False, "outside the grant's time windows")
    return Decision(True, "allowed by grant")

