"""Changing the personal-data settings (issue 17): one path for the API and the CLI.

Each change is stored, audited and announced (an ``events`` row) in one transaction; every server
node then pushes the group's new policy to the agents it holds (:mod:`.personal_push`), and
switching a group off deletes at once what the server already holds for it (:func:`personal.purge`).
"""

from __future__ import annotations

import time
from typing import Any

from server import audit, events
from server.store import Database, Transaction

from . import personal, settings

#: Event kind; subject = the group whose switch changed, or ``*`` (the retention: every group).
PERSONAL_DATA_CHANGED = "cmdb.personal_data"
ALL_GROUPS = "*"


async def overview(db: Database | Transaction, groups: set[str] | None) -> dict[str, Any]:
    """The retention and, per device group the caller may view (None: all), whether it collects."""
    config = await settings.personal_data(db)
    off = set(config["groups_off"])
    rows = await db.fetchall("SELECT name FROM device_groups ORDER BY name")
    return {"login_retention_days": config["login_retention_days"], "sections": list(settings.PERSONAL_SECTIONS),
            "groups": [{"name": r["name"], "collect": r["name"] not in off} for r in rows
                       if groups is None or r["name"] in groups]}


async def set_group(db: Database, group: str, collect: bool, actor: str) -> dict[str, Any]:
    """Switch one group's collection of local accounts and login history; ValueError for no such group."""
    async with db.transaction() as tx:
        before = await settings.collects_personal_data(tx, group)
        config = await settings.set_group_personal_data(tx, group, collect)
        await audit.append_in(tx, actor, "cmdb.personal_data.group", group, {"collect": collect, "was": before})
        await events.publish_in(tx, PERSONAL_DATA_CHANGED, group)
    if not collect:
        await personal.purge(db, time.time())
    return config


async def set_retention(db: Database, days: int, actor: str) -> dict[str, Any]:
    """Keep login history ``days`` days (ValueError outside 1 … 3650); older entries are purged now."""
    async with db.transaction() as tx:
        before = (await settings.personal_data(tx))["login_retention_days"]
        config = await settings.set_login_retention(tx, days)
        await audit.append_in(tx, actor, "cmdb.personal_data.retention", ALL_GROUPS, {"days": days, "was": before})
        await events.publish_in(tx, PERSONAL_DATA_CHANGED, ALL_GROUPS)
    await personal.purge(db, time.time())
    return config
