"""Vulnerabilities from offline feeds, matched against the installed-software index.

The administrator brings the data (no network access from here): an OSV export (one advisory
object, a list of them, or a zip of ``*.json`` files such as OSV's ``Debian/all.zip``), or the
Debian Security Tracker's JSON (``https://security-tracker.debian.org/tracker/data/json``:
source package → CVE → release → status, fixed version, urgency).

A feed has a name; importing it again replaces what it brought before. Each advisory keeps its
aliases (an OSV ``DSA-…`` names its CVEs) in ``vuln_ids`` so "which devices are exposed to
CVE-X" is one indexed join. Matching uses the package name, the package's source (``dpkg``
packages match Debian/Ubuntu ecosystems, ``rpm`` ones the RPM distributions) and the device's
OS release, then compares versions with :func:`.versions.compare` (dpkg ordering). Matches are
rebuilt for a device when its software or OS section changes, and fleet-wide for the packages a
feed names when it is imported.

Feeds are keyed by source package (the Debian tracker, OSV's Debian and Ubuntu entries): a CVE
filed under ``openssl`` applies to the binaries built from it (``libssl3``, ``openssl``…). Agents
report each binary with its source package and source version (dpkg's ``${source:Package}``,
``${source:Version}``); matching joins on the source name and compares the source version (a
binNMU's binary ``5.2.15-2+b8`` is source ``5.2.15-2``), and a match names the installed binary.
Packages reported without a source (other package managers, older agents) are their own source.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from server.store import Database, Row, Transaction

from . import versions

SEVERITY_RANK = {"critical": 5, "high": 4, "medium": 3, "moderate": 3, "low": 2, "unimportant": 1, "negligible": 1,
                 "unknown": 0}
#: Package source (agent collector) → the feed ecosystems its packages can match.
SOURCE_ECOSYSTEMS: dict[str, frozenset[str]] = {
    "dpkg": frozenset({"debian", "ubuntu"}),
    "rpm": frozenset({"red hat", "almalinux", "rocky linux", "opensuse", "suse", "mageia", "fedora"}),
}
#: Ecosystem → the os-release ``ID`` of systems it describes.
ECOSYSTEM_OS = {"debian": "debian", "ubuntu": "ubuntu", "red hat": "rhel", "almalinux": "almalinux",
                "rocky linux": "rocky", "opensuse": "opensuse-leap", "suse": "sles", "mageia": "mageia",
                "fedora": "fedora"}
MAX_TEXT = 1000
BATCH = 500
#: Largest JSON member read from a zip export.
MAX_MEMBER_BYTES = 16 * 1024 * 1024


class FeedError(ValueError):
    """The file is not a feed of the announced format."""


@dataclass(frozen=True)
class Affected:
    ecosystem: str
    os_release: str
    package: str
    introduced: str = ""
    fixed: str = ""
    last_affected: str = ""


@dataclass
class Advisory:
    id: str
    severity: str
    summary: str
    aliases: list[str] = field(default_factory=list)
    affected: list[Affected] = field(default_factory=list)


def _rank(severity: str) -> int:
    return SEVERITY_RANK.get(severity, 0)


def _severity(text: Any) -> str:
    value = str(text or "").strip().rstrip("*").lower()
    if value in ("not yet assigned", "", "none"):
        return "unknown"
    return value if value in SEVERITY_RANK else "unknown"


def _cvss_bucket(score: float) -> str:
    return "critical" if score >= 9 else "high" if score >= 7 else "medium" if score >= 4 else "low" if score > 0 \
        else "unknown"


# --- parsing ----------------------------------------------------------------------------------

def _ecosystem(raw: str) -> tuple[str, str]:
    """``Debian:12`` → (debian, 12); ``Ubuntu:22.04:LTS`` → (ubuntu, 22.04)."""
    name, _, rest = raw.partition(":")
    return name.strip().lower(), rest.split(":")[0].strip()


def _intervals(events: list[Any]) -> list[tuple[str, str, str]]:
    """OSV range events as (introduced, fixed, last_affected) intervals."""
    out: list[tuple[str, str, str]] = []
    start: str | None = None
    for event in events:
        if not isinstance(event, dict):
            continue
        if "introduced" in event:
            if start is not None:
                out.append((start, "", ""))
            start = str(event["introduced"])
        elif "fixed" in event and start is not None:
            out.append((start, str(event["fixed"]), ""))
            start = None
        elif "last_affected" in event and start is not None:
            out.append((start, "", str(event["last_affected"])))
            start = None
    if start is not None:
        out.append((start, "", ""))
    return out


def _osv_severity(vuln: Mapping[str, Any]) -> str:
    found = "unknown"
    candidates: list[Any] = [(vuln.get("database_specific") or {}).get("severity")]
    for aff in vuln.get("affected") or []:
        if isinstance(aff, dict):
            candidates.append((aff.get("ecosystem_specific") or {}).get("urgency"))
            candidates.append((aff.get("ecosystem_specific") or {}).get("severity"))
            candidates.append((aff.get("database_specific") or {}).get("severity"))
    for sev in vuln.get("severity") or []:
        score = sev.get("score") if isinstance(sev, dict) else None
        try:
            candidates.append(_cvss_bucket(float(str(score))))
        except (TypeError, ValueError):
            continue  # a CVSS vector: no score to bucket without a calculator
    for candidate in candidates:
        if isinstance(candidate, str) and _rank(_severity(candidate)) > _rank(found):
            found = _severity(candidate)
    return found


def parse_osv_one(vuln: Any) -> Advisory | None:
    if not isinstance(vuln, dict) or not isinstance(vuln.get("id"), str):
        return None
    adv = Advisory(id=vuln["id"][:200], severity=_osv_severity(vuln),
                   summary=str(vuln.get("summary") or vuln.get("details") or "")[:MAX_TEXT],
                   aliases=[str(a)[:200] for a in vuln.get("aliases") or [] if isinstance(a, str)][:100])
    for aff in vuln.get("affected") or []:
        pkg = aff.get("package") if isinstance(aff, dict) else None
        if not isinstance(pkg, dict) or not isinstance(pkg.get("name"), str):
            continue
        ecosystem, release = _ecosystem(str(pkg.get("ecosystem") or ""))
        for rng in aff.get("ranges") or []:
            if isinstance(rng, dict) and rng.get("type") in ("ECOSYSTEM", "SEMVER"):
                for intro, fixed, last in _intervals(rng.get("events") or []):
                    adv.affected.append(Affected(ecosystem, release, pkg["name"][:256], intro, fixed, last))
    return adv


def parse_osv(doc: Any) -> list[Advisory]:
    items = doc if isinstance(doc, list) else doc.get("vulns", [doc]) if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise FeedError("an OSV feed is an advisory object, a list of them, or {\"vulns\": [...]}")
    found = [a for a in (parse_osv_one(v) for v in items) if a is not None]
    if items and not found:
        raise FeedError("no OSV advisory (an object with an \"id\") in the file")
    return found


def parse_osv_zip(data: bytes) -> list[Advisory]:
    found: list[Advisory] = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".json") or info.file_size > MAX_MEMBER_BYTES:
                    continue
                found.extend(parse_osv(json.loads(archive.read(info))))
    except zipfile.BadZipFile as exc:
        raise FeedError(f"not a zip file: {exc}") from exc
    return found


def parse_debian(doc: Any, releases: Iterable[str] = ()) -> list[Advisory]:
    """The tracker's JSON; only the named releases (e.g. ``bookworm``) when any are given."""
    if not isinstance(doc, dict):
        raise FeedError("the Debian Security Tracker JSON is an object: source package → CVE → details")
    wanted = set(releases)
    advisories: dict[str, Advisory] = {}
    for package, cves in doc.items():
        if not isinstance(cves, dict):
            raise FeedError(f"package {str(package)[:80]!r}: expected an object of CVEs")
        for cve, info in cves.items():
            if not isinstance(info, dict) or not isinstance(info.get("releases"), dict):
                continue
            for release, state in info["releases"].items():
                if not isinstance(state, dict) or (wanted and release not in wanted):
                    continue
                status, fixed = state.get("status"), str(state.get("fixed_version") or "")
                if status == "resolved" and fixed in ("", "0"):
                    continue  # never affected in this release
                if status not in ("open", "resolved"):
                    continue  # undetermined: nothing to match on
                adv = advisories.get(cve)
                if adv is None:
                    adv = advisories[cve] = Advisory(str(cve)[:200], "unknown",
                                                     str(info.get("description") or "")[:MAX_TEXT])
                severity = _severity(state.get("urgency"))
                if _rank(severity) > _rank(adv.severity):
                    adv.severity = severity
                adv.affected.append(Affected("debian", str(release)[:64], str(package)[:256], "",
                                             fixed if status == "resolved" else ""))
    return list(advisories.values())


def parse_file(data: bytes, fmt: str, releases: Iterable[str] = ()) -> list[Advisory]:
    """``fmt`` is ``osv`` or ``debian``; ``auto`` tells them apart by shape."""
    if data[:2] == b"PK":
        if fmt not in ("osv", "auto"):
            raise FeedError("a zip file can only be an OSV export")
        return parse_osv_zip(data)
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeedError(f"not JSON: {exc}") from exc
    if fmt == "auto":
        fmt = "osv" if isinstance(doc, list) or (isinstance(doc, dict) and ("id" in doc or "vulns" in doc)) \
            else "debian"
    return parse_debian(doc, releases) if fmt == "debian" else parse_osv(doc)


# --- matching ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class OsFacts:
    id: str = ""
    version_id: str = ""
    codename: str = ""


def os_facts(section: Any) -> OsFacts:
    if not isinstance(section, dict):
        return OsFacts()
    return OsFacts(str(section.get("id") or "").lower(), str(section.get("version_id") or "").lower(),
                   str(section.get("codename") or "").lower())


def applies(row: Row | Mapping[str, Any], source: str, version: str, os: OsFacts) -> bool:
    """Whether an affected-range row applies to a package of ``source`` at ``version`` on ``os``."""
    ecosystem = row["ecosystem"]
    if ecosystem not in SOURCE_ECOSYSTEMS.get(source, frozenset()):
        return False
    if os.id and ECOSYSTEM_OS.get(ecosystem, ecosystem) != os.id:
        return False
    release = str(row["os_release"]).lower().lstrip("v")
    if release and os.id and release not in (os.codename, os.version_id) \
            and not os.version_id.startswith(release + "."):
        return False
    if not version:
        return False
    intro, fixed, last = row["introduced"], row["fixed"], row["last_affected"]
    if intro not in ("", "0") and versions.compare(version, intro) < 0:
        return False
    if fixed and versions.compare(version, fixed) >= 0:
        return False
    return not (last and versions.compare(version, last) > 0)


async def _os_of(db: Database | Transaction, device_ids: list[str]) -> dict[str, OsFacts]:
    found: dict[str, OsFacts] = {}
    for i in range(0, len(device_ids), BATCH):
        chunk = device_ids[i:i + BATCH]
        marks = ", ".join("?" for _ in chunk)
        sql = f"SELECT device_id, data FROM inventory_sections WHERE section = 'os' AND device_id IN ({marks})"  # noqa: S608
        rows = await db.fetchall(sql, chunk)
        for r in rows:
            found[r["device_id"]] = os_facts(json.loads(r["data"]))
    return found


def _match_rows(candidates: Iterable[Row], oses: Mapping[str, OsFacts]) -> list[tuple[str, str, str, str, str]]:
    """(device, advisory, package, version, fixed) for each applying candidate, one per key."""
    found: dict[tuple[str, str, str], tuple[str, str, str, str, str]] = {}
    for r in candidates:
        if applies(r, r["source"], r["source_version"], oses.get(r["device_id"], OsFacts())):
            key = (r["device_id"], r["advisory_id"], r["name"])
            found.setdefault(key, (*key, r["version"], r["fixed"]))
    return list(found.values())


_CANDIDATES = ("SELECT s.device_id, s.name, s.version, s.source, s.source_version, a.advisory_id, a.ecosystem,"
               " a.os_release, a.introduced, a.fixed, a.last_affected"
               " FROM software s JOIN vuln_affected a ON a.package = s.source_package")


async def refresh_device(tx: Transaction, device_id: str) -> None:
    """Re-match one device (its software or OS changed)."""
    candidates = await tx.fetchall(_CANDIDATES + " WHERE s.device_id = ?", (device_id,))
    rows = _match_rows(candidates, await _os_of(tx, [device_id]) if candidates else {})
    await tx.execute("DELETE FROM vuln_matches WHERE device_id = ?", (device_id,))
    if rows:
        await tx.executemany("INSERT INTO vuln_matches (device_id, advisory_id, package, version, fixed)"
                             " VALUES (?, ?, ?, ?, ?)", rows)


@dataclass(frozen=True)
class ImportResult:
    feed: str
    advisories: int
    ranges: int
    matches: int
    devices: int


async def import_feed(db: Database, feed: str, advisories: list[Advisory], now: float) -> ImportResult:
    """Replace the feed's advisories and re-match every device having one of their packages."""
    merged: dict[str, Advisory] = {}
    for adv in advisories:  # OSV zips may carry an id twice: keep the union
        if adv.id in merged:
            merged[adv.id].affected.extend(adv.affected)
            merged[adv.id].aliases.extend(a for a in adv.aliases if a not in merged[adv.id].aliases)
        else:
            merged[adv.id] = adv
    async with db.transaction() as tx:
        await tx.execute("DELETE FROM vuln_advisories WHERE feed = ?", (feed,))
        ids = sorted(merged)
        for i in range(0, len(ids), BATCH):
            chunk = ids[i:i + BATCH]
            await tx.execute(f"DELETE FROM vuln_advisories WHERE id IN ({', '.join('?' for _ in chunk)})",  # noqa: S608
                             chunk)
        await tx.executemany("INSERT INTO vuln_advisories (id, feed, severity, summary, aliases, imported_at)"
                             " VALUES (?, ?, ?, ?, ?, ?)",
                             [(a.id, feed, a.severity, a.summary, json.dumps(a.aliases), now) for a in merged.values()])
        await tx.executemany("INSERT INTO vuln_ids (alias, advisory_id) VALUES (?, ?)",
                             sorted({(alias.upper(), a.id) for a in merged.values() for alias in [a.id, *a.aliases]}))
        ranges = sorted({(a.id, r.ecosystem, r.os_release, r.package, r.introduced, r.fixed, r.last_affected)
                         for a in merged.values() for r in a.affected})
        await tx.executemany("INSERT INTO vuln_affected (advisory_id, ecosystem, os_release, package, introduced,"
                             " fixed, last_affected) VALUES (?, ?, ?, ?, ?, ?, ?)", ranges)
        packages = sorted({r[3] for r in ranges})
        candidates: list[Row] = []
        for i in range(0, len(packages), BATCH):
            chunk = packages[i:i + BATCH]
            candidates.extend(await tx.fetchall(
                _CANDIDATES + " JOIN vuln_advisories v ON v.id = a.advisory_id WHERE v.feed = ?"
                f" AND s.source_package IN ({', '.join('?' for _ in chunk)})", (feed, *chunk)))
        oses = await _os_of(tx, sorted({r["device_id"] for r in candidates}))
        rows = _match_rows(candidates, oses)
        if rows:
            await tx.executemany("INSERT INTO vuln_matches (device_id, advisory_id, package, version, fixed)"
                                 " VALUES (?, ?, ?, ?, ?)", rows)
    return ImportResult(feed, len(merged), len(ranges), len(rows), len({r[0] for r in rows}))


# --- questions --------------------------------------------------------------------------------

def _groups_sql(groups: set[str] | None, column: str) -> tuple[str, list[str]] | None:
    if groups is None:
        return "", []
    if not groups:
        return None
    return f" AND {column} IN ({', '.join('?' for _ in groups)})", sorted(groups)


async def device_vulns(db: Database, device_id: str) -> list[dict[str, Any]]:
    rows = await db.fetchall("SELECT m.advisory_id, m.package, m.version, m.fixed, a.severity, a.summary, a.aliases"
                             " FROM vuln_matches m JOIN vuln_advisories a ON a.id = m.advisory_id"
                             " WHERE m.device_id = ?", (device_id,))
    items = [{"id": r["advisory_id"], "aliases": json.loads(r["aliases"]), "severity": r["severity"],
              "summary": r["summary"], "package": r["package"], "version": r["version"], "fixed": r["fixed"] or None}
             for r in rows]
    items.sort(key=lambda i: (-_rank(i["severity"]), i["id"], i["package"]))
    return items


async def fleet_vulns(db: Database, groups: set[str] | None, *, severity: str = "", limit: int = 500
                      ) -> list[dict[str, Any]]:
    """Every advisory that applies somewhere the caller may see, with how many devices it hits."""
    scoped = _groups_sql(groups, "d.group_name")
    if scoped is None:
        return []
    clause, params = scoped
    if severity:
        clause += " AND a.severity = ?"
        params = [*params, severity]
    rows = await db.fetchall(
        "SELECT m.advisory_id, a.severity, a.summary, a.aliases, COUNT(DISTINCT m.device_id) AS devices,"  # noqa: S608
        " MIN(m.fixed) AS fixed, MIN(m.package) AS package FROM vuln_matches m"
        " JOIN vuln_advisories a ON a.id = m.advisory_id JOIN devices d ON d.id = m.device_id"
        f" WHERE 1 = 1{clause} GROUP BY m.advisory_id, a.severity, a.summary, a.aliases", params)
    items = [{"id": r["advisory_id"], "aliases": json.loads(r["aliases"]), "severity": r["severity"],
              "summary": r["summary"], "devices": int(r["devices"]), "package": r["package"],
              "fixed": r["fixed"] or None} for r in rows]
    items.sort(key=lambda i: (-_rank(i["severity"]), -i["devices"], i["id"]))
    return items[:limit]


async def exposed(db: Database, cve: str, groups: set[str] | None, *, limit: int | None = None, offset: int = 0
                  ) -> tuple[list[dict[str, Any]], int, int]:
    """Which devices are exposed to ``cve`` (an advisory id or any of its aliases): one page of
    (device, package) rows by hostname, how many rows and how many devices in all."""
    scoped = _groups_sql(groups, "d.group_name")
    if scoped is None:
        return [], 0, 0
    clause, params = scoped
    tables = (" FROM vuln_ids i JOIN vuln_matches m ON m.advisory_id = i.advisory_id"
              " JOIN vuln_advisories a ON a.id = m.advisory_id JOIN devices d ON d.id = m.device_id")
    counts = await db.fetchone(f"SELECT COUNT(*) AS n, COUNT(DISTINCT m.device_id) AS devices{tables}"
                               f" WHERE i.alias = ?{clause}", (cve.upper(), *params))
    page = "" if limit is None else " LIMIT ? OFFSET ?"
    rows = await db.fetchall(
        "SELECT m.device_id, d.hostname, d.group_name, m.package, m.version, m.fixed, m.advisory_id,"
        f" a.severity{tables} WHERE i.alias = ?{clause} ORDER BY d.hostname, m.device_id, m.package, m.advisory_id"
        f"{page}", (cve.upper(), *params) if limit is None else (cve.upper(), *params, limit, offset))
    items = [{"device_id": r["device_id"], "hostname": r["hostname"], "group": r["group_name"],
              "package": r["package"], "version": r["version"], "fixed": r["fixed"] or None,
              "advisory": r["advisory_id"], "severity": r["severity"]} for r in rows]
    return items, int(counts["n"]) if counts else 0, int(counts["devices"]) if counts else 0


async def feeds(db: Database) -> list[dict[str, Any]]:
    rows = await db.fetchall("SELECT feed, COUNT(*) AS n, MAX(imported_at) AS imported_at FROM vuln_advisories"
                             " GROUP BY feed ORDER BY feed")
    return [{"feed": r["feed"], "advisories": int(r["n"]), "imported_at": r["imported_at"]} for r in rows]


FEED_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
