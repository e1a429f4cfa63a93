"""Personal data in the CMDB: local accounts and login history (issue 17).

Three places enforce the settings of :mod:`.settings` (``personal_data``):

* the agent is told in ``welcome.inventory_policy`` what to leave out and how many days of login
  history to send (:func:`inventory_policy`), so a group that collects none sends none;
* ingest refuses the personal sections from a device whose group collects none
  (:func:`excluded_sections`): an agent connected before the switch, or an older one, cannot
  put them back;
* :func:`purge` (the maintenance pass) deletes what the server already holds for such groups and
  trims login history older than the retention period, in the stored sections and in the
  change history.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from protocol.messages import InventoryPolicy
from server.store import Database, Transaction

from . import settings
from .sections import checksum

log = logging.getLogger(__name__)

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class PurgeResult:
    sections_deleted: int
    sections_trimmed: int
    changes_deleted: int


def iso_utc(timestamp: float) -> str:
    """The agents' time format (``2024-01-02T03:04:05Z``), so stored times compare as strings."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def inventory_policy(db: Database | Transaction, group: str) -> InventoryPolicy:
    config = await settings.personal_data(db)
    omit = list(settings.PERSONAL_SECTIONS) if group in config["groups_off"] else []
    return InventoryPolicy(omit=omit, login_days=int(config["login_retention_days"]))


async def excluded_sections(db: Database | Transaction, group: str) -> frozenset[str]:
    """Sections the server does not take from devices of ``group``."""
    if await settings.collects_personal_data(db, group):
        return frozenset()
    return frozenset(settings.PERSONAL_SECTIONS)


def trim_logins(data: Any, cutoff_iso: str) -> Any:
    """The logins section without entries older than ``cutoff_iso`` (ISO UTC strings compare in order)."""
    if not isinstance(data, dict):
        return data
    trimmed = dict(data)
    for key in ("entries", "last"):
        items = data.get(key)
        if isinstance(items, list):
            trimmed[key] = [e for e in items if isinstance(e, dict) and str(e.get("time", "")) >= cutoff_iso]
    return trimmed


async def purge(db: Database, now: float) -> PurgeResult:
    """Delete personal sections of groups that collect none; trim login history past retention."""
    config = await settings.personal_data(db)
    cutoff = now - int(config["login_retention_days"]) * DAY_S
    cutoff_iso = iso_utc(cutoff)
    names = settings.PERSONAL_SECTIONS
    deleted = trimmed = changes = 0
    async with db.transaction() as tx:
        for group in config["groups_off"]:
            for name in names:
                params = (name, str(group))
                deleted += await tx.execute("DELETE FROM inventory_sections WHERE section = ? AND device_id IN"
                                            " (SELECT id FROM devices WHERE group_name = ?)", params)
                changes += await tx.execute("DELETE FROM inventory_changes WHERE section = ? AND device_id IN"
                                            " (SELECT id FROM devices WHERE group_name = ?)", params)
        rows = await tx.fetchall("SELECT device_id, data FROM inventory_sections WHERE section = 'logins'")
        for row in rows:
            data = json.loads(row["data"])
            kept = trim_logins(data, cutoff_iso)
            if kept == data:
                continue
            await tx.execute("UPDATE inventory_sections SET data = ?, checksum = ? WHERE device_id = ?"
                             " AND section = 'logins'",
                             (json.dumps(kept, separators=(",", ":")), checksum(kept), row["device_id"]))
            trimmed += 1
        changes += await tx.execute("DELETE FROM inventory_changes WHERE section = 'logins' AND ts < ?", (cutoff,))
    return PurgeResult(deleted, trimmed, changes)
