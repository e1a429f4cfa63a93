"""Admin-changeable CMDB settings (alert rules, webhook), stored in ``cmdb_settings``.

Kept in the database rather than the TOML file so every server node sees the same values
and ``helpline admin cmdb …`` can change them while the server runs.
"""

from __future__ import annotations

import json
from typing import Any

from server.store import Database, Transaction

#: Alert rules and their defaults; an admin overrides any field per rule.
DEFAULT_RULES: dict[str, dict[str, Any]] = {
    "disk_free": {"enabled": True, "warning_below": 10.0, "critical_below": 5.0},
    "memory_high": {"enabled": True, "above": 90.0, "for_s": 600.0},
    "cpu_high": {"enabled": True, "above": 90.0, "for_s": 900.0},
    "battery_degraded": {"enabled": True, "health_below": 80.0},
    "reboot_pending": {"enabled": True, "for_s": 7 * 86400.0},
    "agent_offline": {"enabled": True, "for_s": 86400.0},
    # Off: no new over-use alerts, and the open ones resolve at the next count or maintenance pass.
    "licence_overuse": {"enabled": True},
}

WEBHOOK_DEFAULTS: dict[str, Any] = {"url": "", "max_attempts": 10, "backoff_s": 2.0, "backoff_cap_s": 600.0,
                                    "timeout_s": 10.0}


async def get(db: Database | Transaction, key: str) -> Any:
    row = await db.fetchone("SELECT value FROM cmdb_settings WHERE key = ?", (key,))
    return json.loads(row["value"]) if row else None


async def put(db: Database | Transaction, key: str, value: Any) -> None:
    await db.execute("INSERT INTO cmdb_settings (key, value) VALUES (?, ?)"
                     " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, json.dumps(value)))


async def alert_rules(db: Database | Transaction) -> dict[str, dict[str, Any]]:
    overrides = await get(db, "alert_rules") or {}
    return {name: {**defaults, **overrides.get(name, {})} for name, defaults in DEFAULT_RULES.items()}


async def set_rule(db: Database | Transaction, rule: str, values: dict[str, Any]) -> dict[str, Any]:
    """Override fields of one rule; unknown rules or fields raise ValueError."""
    if rule not in DEFAULT_RULES:
        raise ValueError(f"unknown alert rule {rule!r}; known: {', '.join(DEFAULT_RULES)}")
    unknown = set(values) - set(DEFAULT_RULES[rule])
    if unknown:
        raise ValueError(f"rule {rule} has no field(s) {', '.join(sorted(unknown))}; "
                         f"fields: {', '.join(DEFAULT_RULES[rule])}")
    overrides = await get(db, "alert_rules") or {}
    overrides[rule] = {**overrides.get(rule, {}), **values}
    await put(db, "alert_rules", overrides)
    return {**DEFAULT_RULES[rule], **overrides[rule]}


async def webhook(db: Database | Transaction) -> dict[str, Any]:
    return {**WEBHOOK_DEFAULTS, **(await get(db, "webhook") or {})}


async def set_webhook(db: Database | Transaction, **values: Any) -> dict[str, Any]:
    unknown = set(values) - set(WEBHOOK_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown webhook setting(s): {', '.join(sorted(unknown))}")
    current = await get(db, "webhook") or {}
    current.update(values)
    await put(db, "webhook", current)
    return {**WEBHOOK_DEFAULTS, **current}


# --- personal data (issue 17) -------------------------------------------------------------------

#: Inventory sections that hold personal data: local accounts and login history.
PERSONAL_SECTIONS = ("accounts", "logins")
#: ``login_retention_days``: login history older than this is purged (and agents are told not to send it);
#: ``groups_off``: device groups whose agents do not collect the personal sections at all.
PERSONAL_DATA_DEFAULTS: dict[str, Any] = {"login_retention_days": 90, "groups_off": []}
MAX_RETENTION_DAYS = 3650


async def personal_data(db: Database | Transaction) -> dict[str, Any]:
    return {**PERSONAL_DATA_DEFAULTS, **(await get(db, "personal_data") or {})}


async def set_login_retention(db: Database | Transaction, days: int) -> dict[str, Any]:
    """Keep login history ``days`` days (1 … 3650); the next maintenance pass purges older entries."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS:
        raise ValueError(f"login retention must be a whole number of days from 1 to {MAX_RETENTION_DAYS}")
    current = await get(db, "personal_data") or {}
    current["login_retention_days"] = days
    await put(db, "personal_data", current)
    return {**PERSONAL_DATA_DEFAULTS, **current}


async def set_group_personal_data(db: Database | Transaction, group: str, collect: bool) -> dict[str, Any]:
    """Switch collection of local accounts and login history on or off for one device group.

    Off: agents of the group are told to leave the sections out (at their next connection),
    the server refuses them from any agent of the group meanwhile, and the maintenance pass
    deletes what it already holds for the group's devices.
    """
    if not await db.fetchone("SELECT name FROM device_groups WHERE name = ?", (group,)):
        raise ValueError(f"no device group {group!r}")
    current = await get(db, "personal_data") or {}
    off = set(current.get("groups_off") or [])
    if collect:
        off.discard(group)
    else:
        off.add(group)
    current["groups_off"] = sorted(off)
    await put(db, "personal_data", current)
    return {**PERSONAL_DATA_DEFAULTS, **current}


async def collects_personal_data(db: Database | Transaction, group: str) -> bool:
    return group not in (await personal_data(db))["groups_off"]
