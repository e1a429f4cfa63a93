"""Redeeming a code: rate limits first, then one guess per websocket, every outcome audited.

Order of checks for ``GET /api/v1/support/connect`` (console port, no login, no client
certificate): the per-address window, then the global window (:mod:`.settings` derives the
guessing bound from both); only then is the websocket accepted and its first frame — one
:class:`~protocol.support.SupportRedeem` — read. Outcomes ``ok``, ``unknown``, ``expired``,
``reused`` and ``revoked`` are audited one record each (their number is bounded by the global
limit); ``rate_limited`` ones go through the server's :class:`~server.audit_limits.AuditThrottle`
(a few per address and minute, then one aggregate record), since nothing else bounds them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from server import audit
from server.accounts.ratelimit import SlidingWindow
from server.audit_limits import AuditThrottle
from server.store import Database, Row

from . import codes, repository
from .settings import SupportCodeSettings

Outcome = Literal["ok", "unknown", "expired", "reused", "revoked", "rate_limited", "malformed"]
ACTION = "support_code.redeem"


@dataclass(frozen=True)
class Redeemed:
    outcome: Outcome
    code: Row | None = None
    client_id: str = ""


class Redeemer:
    """The redeem limits of this node and the one place a code is checked and spent."""

    def __init__(self, db: Callable[[], Database], settings: SupportCodeSettings, pepper: bytes,
                 throttle: AuditThrottle, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.settings = settings
        self._pepper = pepper
        self._throttle = throttle
        self._clock = clock
        self.per_address = SlidingWindow(settings.per_address_per_window, settings.window_s)
        self.everywhere = SlidingWindow(settings.global_per_window, settings.window_s)

    async def admit(self, address: str) -> bool:
        """Count one attempt; False (audited, throttled) when a limit refuses it."""
        if self.per_address.allow(address) and self.everywhere.allow("*"):
            return True
        await self._throttle.append(self._db(), f"peer:{address}", ACTION, "", {"outcome": "rate_limited"},
                                    peer=address)
        return False

    async def audit_malformed(self, address: str) -> None:
        """An admitted attempt whose first frame was not a redeem (or never came)."""
        await audit.append(self._db(), f"peer:{address}", ACTION, "", {"outcome": "malformed", "peer": address})

    async def redeem(self, typed: str, *, address: str, hostname: str, user: str) -> Redeemed:
        """Check ``typed`` and, when it is a live code, spend it and record the client (audited either way)."""
        db, now = self._db(), self._clock()
        digits = codes.normalized(typed)
        row = await repository.by_hash(db, codes.code_hash(self._pepper, digits)) if digits.isdigit() else None
        outcome: Outcome
        client_id = ""
        if row is None:
            outcome = "unknown"
        elif row["revoked_at"] is not None:
            outcome = "revoked"
        elif row["used_at"] is not None:
            outcome = "reused"
        elif row["expires_at"] <= now:
            outcome = "expired"
        else:
            client_id = "spc-" + secrets.token_hex(8)
            async with db.transaction() as tx:
                if await repository.consume(tx, row["id"], now=now, address=address, client_id=client_id):
                    await repository.insert_client(tx, client_id=client_id, code_id=row["id"],
                                                   group=row["group_name"], technician=row["technician_user"],
                                                   hostname=hostname, os_user=user, address=address, now=now)
                    outcome = "ok"
                else:  # a concurrent redeem or revocation won
                    outcome, client_id = "reused", ""
        details = {"outcome": outcome, "peer": address, "hostname": hostname[:64], "user": user[:64]}
        if row is not None:
            details.update(code_id=row["id"], technician=row["technician_user"], group=row["group_name"])
        if client_id:
            details["client_id"] = client_id
        await audit.append(db, f"peer:{address}", ACTION, row["id"] if row is not None else "", details)
        return Redeemed(outcome, row, client_id)
