"""Current inventory per device, its change history and the installed-software index.

:func:`apply_report` runs inside the caller's transaction: either every section, change
record and software row of one report is written, or (on error or resync) nothing is.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from server import devices
from server.store import Database, Row, Transaction

from . import software_search
from .diff import Change, diff_section, packages_by_key
from .sections import summary


@dataclass(frozen=True)
class ApplyResult:
    """``resync`` means the agent's unsent sections don't match ours: ask for a full report."""

    resync: bool
    checksums: dict[str, str]
    changes: list[Change]
    reason: str = ""


async def stored_checksums(db: Database | Transaction, device_id: str) -> dict[str, str] | None:
    rows = await db.fetchall("SELECT section, checksum FROM inventory_sections WHERE device_id = ?", (device_id,))
    return {r["section"]: r["checksum"] for r in rows} if rows else None


async def get_inventory(db: Database | Transaction, device_id: str) -> dict[str, Any]:
    rows = await db.fetchall("SELECT section, data FROM inventory_sections WHERE device_id = ? ORDER BY section",
                             (device_id,))
    return {r["section"]: json.loads(r["data"]) for r in rows}


async def apply_report(tx: Transaction, device_id: str, *, full: bool, sections: Mapping[str, Any],
                       checksums: Mapping[str, str], now: float, refused: Collection[str] = ()) -> ApplyResult:
    """Apply a validated report (see :func:`sections.split_report`).

    ``refused`` names sections the report carried but the server refused: the stored copy (if any)
    stays, and the checksums compared and acknowledged are the stored ones for them, so the agent
    learns what the server really holds.
    """
    rows = await tx.fetchall("SELECT section, checksum FROM inventory_sections WHERE device_id = ?", (device_id,))
    stored = {r["section"]: r["checksum"] for r in rows}
    if refused:
        checksums = {name: digest for name, digest in checksums.items() if name not in refused}
        checksums.update({name: stored[name] for name in refused if name in stored})
        sections = {name: data for name, data in sections.items() if name not in refused}
    if not full:
        stale = sorted(n for n in checksums if n not in sections and stored.get(n) != checksums[n])
        if stale:
            return ApplyResult(True, stored, [], f"server copy differs for: {', '.join(stale)}")
    changes: list[Change] = []
    for name, data in sections.items():
        digest = checksums[name]
        if stored.get(name) == digest:
            continue
        if name in stored:
            old_row = await tx.fetchone("SELECT data FROM inventory_sections WHERE device_id = ? AND section = ?",
                                        (device_id, name))
            old = json.loads(old_row["data"]) if old_row else None
            changes.extend(diff_section(name, old, data))
        else:
            changes.append(Change(name, "", "section_added", None, None))
        await tx.execute(
            "INSERT INTO inventory_sections (device_id, section, data, checksum, updated_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (device_id, section) DO UPDATE SET data = excluded.data, checksum = excluded.checksum,"
            " updated_at = excluded.updated_at",
            (device_id, name, json.dumps(data, separators=(",", ":")), digest, now),
        )
        if name == "software":
            await _replace_software(tx, device_id, data)
    for name in sorted(set(stored) - set(checksums)):
        await tx.execute("DELETE FROM inventory_sections WHERE device_id = ? AND section = ?", (device_id, name))
        changes.append(Change(name, "", "section_removed", None, None))
        if name == "software":
            await tx.execute("DELETE FROM software WHERE device_id = ?", (device_id,))
    if changes:
        await tx.executemany(
            "INSERT INTO inventory_changes (device_id, ts, section, path, change, old_value, new_value)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(device_id, now, c.section, c.path, c.change, c.old, c.new) for c in changes],
        )
    await _update_summary(tx, device_id, sections, now)
    return ApplyResult(False, dict(checksums), changes)


async def _replace_software(tx: Transaction, device_id: str, data: Any) -> None:
    await tx.execute("DELETE FROM software WHERE device_id = ?", (device_id,))
    rows = [(device_id, str(p["name"]), str(p.get("version") or ""), str(p.get("arch") or ""),
             str(p.get("source") or ""), str(p.get("vendor") or "")[:255],
             software_search.version_key(str(p.get("version") or "")),
             # what vulnerability feeds keyed by source package match (the package itself when not said)
             str(p.get("source_package") or p["name"]), str(p.get("source_version") or p.get("version") or ""))
            for p in packages_by_key(data).values()]
    if rows:
        await tx.executemany("INSERT INTO software (device_id, name, version, arch, source, vendor, version_key,"
                             " source_package, source_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


async def _update_summary(tx: Transaction, device_id: str, sections: Mapping[str, Any], now: float) -> None:
    await tx.execute("INSERT INTO cmdb_devices (device_id, last_inventory) VALUES (?, ?)"
                     " ON CONFLICT (device_id) DO UPDATE SET last_inventory = excluded.last_inventory",
                     (device_id, now))
    fields = summary(sections)
    for column in ("os", "ip", "serial", "model"):
        if column in fields:
            await tx.execute(f"UPDATE cmdb_devices SET {column} = ? WHERE device_id = ?",  # noqa: S608 - fixed names
                             (fields[column], device_id))
    identity = sections.get("identity")
    if isinstance(identity, dict) and isinstance(identity.get("hostname"), str):
        await devices.set_hostname(tx, device_id, identity["hostname"])
    battery = sections.get("battery")
    if "battery" in sections:
        health = battery.get("health_percent") if isinstance(battery, dict) else None
        value = float(health) if isinstance(health, int | float) else None
        await tx.execute("UPDATE cmdb_devices SET battery_health = ? WHERE device_id = ?", (value, device_id))
    security = sections.get("security")
    if isinstance(security, dict):
        reboot = security.get("reboot_required")
        required = bool(reboot.get("required")) if isinstance(reboot, dict) else bool(reboot)
        if required:
            await tx.execute("UPDATE cmdb_devices SET reboot_pending_since = COALESCE(reboot_pending_since, ?)"
                             " WHERE device_id = ?", (now, device_id))
        else:
            await tx.execute("UPDATE cmdb_devices SET reboot_pending_since = NULL WHERE device_id = ?", (device_id,))


async def changes(db: Database, device_id: str, *, since: float | None = None, section: str | None = None,
                  limit: int = 1000) -> list[Row]:
    sql = "SELECT ts, section, path, change, old_value, new_value FROM inventory_changes WHERE device_id = ?"
    params: list[Any] = [device_id]
    if since is not None:
        sql += " AND ts >= ?"
        params.append(since)
    if section:
        sql += " AND section = ?"
        params.append(section)
    sql += " ORDER BY ts DESC, id DESC LIMIT ?"
    params.append(limit)
    return await db.fetchall(sql, params)


async def device_software(db: Database, device_id: str, q: str | None = None) -> list[Row]:
    sql = "SELECT name, version, arch, source, vendor FROM software WHERE device_id = ?"
    params: list[Any] = [device_id]
    if q:
        sql += " AND LOWER(name) LIKE ?"
        params.append(f"%{q.lower()}%")
    return await db.fetchall(sql + " ORDER BY name, arch", params)
