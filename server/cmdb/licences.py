"""Licence compliance: entitlements counted against the installations the fleet reports.

An entitlement names a product by a package-name pattern (``*`` and ``?``, case-insensitive), an
optional version range (``version_min`` ≤ v < ``version_below``, Debian ordering as everywhere in
the CMDB), seats, an owner and an expiry. ``licence_installs`` holds one row per (licence, device)
with a matching package; it is kept per device on every inventory that changes software, and
rebuilt fleet-wide when an entitlement is created or edited, so the count is one indexed COUNT.

Over-use raises the ``licence_overuse`` alert through :mod:`.alerts` on each device beyond the
seats (devices are ranked by enrolment time: the newest installations are the excess), and
resolves it when the count falls back or the rule is switched off (``helpline admin cmdb`` rule
``licence_overuse``, ``enabled``) — so webhooks and the alert list see it like any other.
"""

from __future__ import annotations

import csv
import fnmatch
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from server.store import Database, Row, Transaction

from . import alerts, settings, versions
from .relations import new_id

RULE = "licence_overuse"
INSERT_INSTALL = "INSERT INTO licence_installs (licence_id, device_id, package, version) VALUES (?, ?, ?, ?)"
#: A contract expiring within this many seconds is reported as "expiring".
EXPIRING_S = 30 * 86400.0


@dataclass(frozen=True)
class Entitlement:
    product: str
    pattern: str
    seats: int
    version_min: str = ""
    version_below: str = ""
    owner: str = ""
    expires_at: float | None = None
    notes: str = ""


def matches(row: Row | dict[str, Any], name: str, version: str) -> bool:
    """Whether package ``name`` at ``version`` counts against licence ``row``."""
    if not fnmatch.fnmatchcase(name.lower(), str(row["pattern"]).lower()):
        return False
    if row["version_min"] and versions.compare(version, row["version_min"]) < 0:
        return False
    return not (row["version_max"] and versions.compare(version, row["version_max"]) >= 0)


def _like(pattern: str) -> str:
    """The glob as a LIKE prefilter (``!`` escapes LIKE's own wildcards)."""
    escaped = pattern.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return escaped.replace("*", "%").replace("?", "_")


async def create(tx: Transaction, ent: Entitlement, now: float) -> str:
    licence_id = new_id("lic")
    await tx.execute("INSERT INTO licences (id, product, pattern, version_min, version_max, seats, owner, expires_at,"
                     " notes, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (licence_id, ent.product, ent.pattern, ent.version_min, ent.version_below, ent.seats, ent.owner,
                      ent.expires_at, ent.notes, now, now))
    await recount(tx, licence_id, now)
    return licence_id


async def update(tx: Transaction, licence_id: str, ent: Entitlement, now: float) -> bool:
    if await tx.fetchone("SELECT id FROM licences WHERE id = ?", (licence_id,)) is None:
        return False
    await tx.execute("UPDATE licences SET product = ?, pattern = ?, version_min = ?, version_max = ?, seats = ?,"
                     " owner = ?, expires_at = ?, notes = ?, updated_at = ? WHERE id = ?",
                     (ent.product, ent.pattern, ent.version_min, ent.version_below, ent.seats, ent.owner,
                      ent.expires_at, ent.notes, now, licence_id))
    await recount(tx, licence_id, now)
    return True


async def delete(tx: Transaction, licence_id: str, now: float) -> bool:
    if await tx.fetchone("SELECT id FROM licences WHERE id = ?", (licence_id,)) is None:
        return False
    await _set_alerts(tx, licence_id, "", set(), now)
    await tx.execute("DELETE FROM licence_installs WHERE licence_id = ?", (licence_id,))
    await tx.execute("DELETE FROM licences WHERE id = ?", (licence_id,))
    return True


async def recount(tx: Transaction, licence_id: str, now: float) -> None:
    """Rebuild one licence's installations from the whole fleet's software index."""
    lic = await tx.fetchone("SELECT * FROM licences WHERE id = ?", (licence_id,))
    if lic is None:
        return
    rows = await tx.fetchall("SELECT device_id, name, version FROM software WHERE LOWER(name) LIKE ? ESCAPE '!'"
                             " ORDER BY device_id, name", (_like(lic["pattern"]),))
    found: dict[str, tuple[str, str]] = {}
    for r in rows:
        if r["device_id"] not in found and matches(lic, r["name"], r["version"]):
            found[r["device_id"]] = (r["name"], r["version"])
    await tx.execute("DELETE FROM licence_installs WHERE licence_id = ?", (licence_id,))
    if found:
        await tx.executemany(INSERT_INSTALL,
                             [(licence_id, dev, name, ver) for dev, (name, ver) in found.items()])
    await evaluate(tx, licence_id, now)


async def refresh_device(tx: Transaction, device_id: str, now: float) -> None:
    """Re-count one device against every licence (its software changed); re-judge the licences it moved."""
    lics = await tx.fetchall("SELECT * FROM licences")
    if not lics:
        return
    packages = await tx.fetchall("SELECT name, version FROM software WHERE device_id = ? ORDER BY name", (device_id,))
    before = {r["licence_id"]: (r["package"], r["version"]) for r in
              await tx.fetchall("SELECT licence_id, package, version FROM licence_installs WHERE device_id = ?",
                                (device_id,))}
    after: dict[str, tuple[str, str]] = {}
    for lic in lics:
        hit = next((p for p in packages if matches(lic, p["name"], p["version"])), None)
        if hit is not None:
            after[lic["id"]] = (hit["name"], hit["version"])
    if before == after:
        return
    await tx.execute("DELETE FROM licence_installs WHERE device_id = ?", (device_id,))
    if after:
        await tx.executemany(INSERT_INSTALL,
                             [(lic, device_id, name, ver) for lic, (name, ver) in after.items()])
    for licence_id in sorted(set(before) ^ set(after)):
        await evaluate(tx, licence_id, now)


async def _set_alerts(tx: Transaction, licence_id: str, message: str, excess: set[str], now: float) -> None:
    """Open the over-use alert on exactly the ``excess`` devices; resolve it elsewhere."""
    open_rows = await tx.fetchall("SELECT device_id FROM alerts WHERE rule = ? AND subject = ? AND status = 'open'",
                                  (RULE, licence_id))
    for device_id in sorted(excess):
        await alerts.raise_alert(tx, device_id, RULE, licence_id, "warning", message, now)
    for row in open_rows:
        if row["device_id"] not in excess:
            await alerts.resolve(tx, row["device_id"], RULE, licence_id, now)


async def evaluate(tx: Transaction, licence_id: str, now: float) -> None:
    """Compare installations with seats and open or resolve the over-use alerts."""
    lic = await tx.fetchone("SELECT * FROM licences WHERE id = ?", (licence_id,))
    if lic is None:
        return
    installs = await tx.fetchall("SELECT i.device_id FROM licence_installs i JOIN devices d ON d.id = i.device_id"
                                 " WHERE i.licence_id = ? ORDER BY d.enrolled_at, d.id", (licence_id,))
    count, seats = len(installs), int(lic["seats"])
    enabled = (await settings.alert_rules(tx))[RULE]["enabled"]
    excess = {r["device_id"] for r in installs[seats:]} if enabled and count > seats else set()
    message = f"{lic['product']}: {count} installations for {seats} seats (this device is beyond them)"
    await _set_alerts(tx, licence_id, message, excess, now)


async def evaluate_all(db: Database, now: float) -> None:
    """Periodic: re-judge every licence (devices deleted since, seats changed elsewhere)."""
    for row in await db.fetchall("SELECT id FROM licences ORDER BY id"):
        async with db.transaction() as tx:
            await evaluate(tx, row["id"], now)


def _status(count: int, seats: int, expires_at: float | None, now: float) -> str:
    if count > seats:
        return "over_use"
    if expires_at is not None and expires_at <= now:
        return "expired"
    if expires_at is not None and expires_at - now <= EXPIRING_S:
        return "expiring"
    if count < seats:
        return "unused_seats"
    return "ok"


async def report(db: Database, now: float, licence_id: str | None = None) -> list[dict[str, Any]]:
    """Every licence with its installations, unused seats, over-use and contract state."""
    sql = ("SELECT l.*, (SELECT COUNT(*) FROM licence_installs i WHERE i.licence_id = l.id) AS installed"
           " FROM licences l")
    params: tuple[Any, ...] = ()
    if licence_id is not None:
        sql += " WHERE l.id = ?"
        params = (licence_id,)
    rows = await db.fetchall(sql + " ORDER BY LOWER(l.product), l.id", params)
    items = []
    for r in rows:
        count, seats = int(r["installed"] or 0), int(r["seats"])
        items.append({"id": r["id"], "product": r["product"], "pattern": r["pattern"],
                      "version_min": r["version_min"], "version_below": r["version_max"], "seats": seats,
                      "owner": r["owner"], "expires_at": r["expires_at"], "notes": r["notes"],
                      "installed": count, "unused": max(0, seats - count), "over": max(0, count - seats),
                      "status": _status(count, seats, r["expires_at"], now), "updated_at": r["updated_at"]})
    return items


async def installations(db: Database, licence_id: str, groups: set[str] | None) -> list[Row]:
    sql = ("SELECT i.device_id, d.hostname, d.group_name, i.package, i.version FROM licence_installs i"
           " JOIN devices d ON d.id = i.device_id WHERE i.licence_id = ?")
    params: list[Any] = [licence_id]
    if groups is not None:
        if not groups:
            return []
        sql += f" AND d.group_name IN ({', '.join('?' for _ in groups)})"
        params.extend(sorted(groups))
    return await db.fetchall(sql + " ORDER BY d.enrolled_at, d.id", params)


CSV_COLUMNS = ("product", "pattern", "version_min", "version_below", "seats", "installed", "unused", "over", "status",
               "owner", "expires_at", "notes")


def _cell(value: Any) -> str:
    """Text a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(items: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for item in items:
        writer.writerow([_cell(item[c]) for c in CSV_COLUMNS])
    return out.getvalue()
