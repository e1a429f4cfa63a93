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
