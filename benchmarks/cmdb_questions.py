"""Fleet questions at 10,000 devices (issue 17): p95 of each answer, on SQLite (and PostgreSQL when
HELPLINE_TEST_PG_URL is set). Target ≤ 200 ms each.

Questions: which devices have openssl below a version (the /api/v1/software query), the primary
user of a laptop, what breaks if a server goes down (transitive walk over 10,000 ``runs`` and a
service chain with a cycle), which devices are exposed to a CVE. Each is timed through the same
store functions the API handlers call.

    .venv/bin/python benchmarks/cmdb_questions.py [--devices 10000] [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from server.cmdb import relations, software_search, vulns
from server.cmdb.api import MAX_SOFTWARE_PAGE
from server.cmdb.vulns_api import MAX_EXPOSED_PAGE
from server.store import Database, open_database


async def populate(db: Database, n: int) -> None:
    now = time.time()
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO device_groups (name, created_at) VALUES ('fleet', ?) ON CONFLICT DO NOTHING", (now,))
        await tx.executemany("INSERT INTO devices (id, group_name, hostname, status, cert_serial, cert_not_after,"
                             " enrolled_at) VALUES (?, 'fleet', ?, 'active', ?, ?, ?)",
                             [(f"d{i:05}", f"host{i:05}", f"s{i}", now + 86400, now + i) for i in range(n)])
        await tx.executemany("INSERT INTO inventory_sections (device_id, section, data, checksum, updated_at)"
                             " VALUES (?, 'os', ?, 'x', ?)",
                             [(f"d{i:05}", '{"id":"debian","version_id":"12","codename":"bookworm"}', now)
                              for i in range(n)])
        pkgs = [("openssl", "3.0.{}-1~deb12u1"), ("bash", "5.2.15-2+b{}"), ("curl", "7.88.1-10+deb12u{}")] + \
            [(f"pkg{k}", "1.{}") for k in range(17)]
        await tx.executemany("INSERT INTO software (device_id, name, version, arch, source, vendor, version_key,"
                             " source_package, source_version)"
                             " VALUES (?, ?, ?, 'amd64', 'dpkg', '', ?, ?, ?)",  # the key and source as ingest writes
                             [(f"d{i:05}", name, ver.format(i % 15), software_search.version_key(ver.format(i % 15)),
                               name, ver.format(i % 15))
                              for i in range(n) for name, ver in pkgs])
        await tx.executemany("INSERT INTO cmdb_logins (device_id, username, first_seen, last_seen, observations)"
                             " VALUES (?, ?, ?, ?, ?)",
                             [(f"d{i:05}", f"user{(i + k) % 3000}", now, now, k + 1) for i in range(n) for k in range(3)])
        await tx.executemany("INSERT INTO cmdb_services (id, name, created_at, created_by) VALUES (?, ?, ?, 'bench')",
                             [(f"svc{s}", f"service {s}", now) for s in range(100)])
        rel = [(f"r{i}", "runs", "device", f"d{i:05}", "service", f"svc{i % 100}", now, "bench") for i in range(n)]
        rel += [(f"c{s}", "depends_on", "service", f"svc{s + 1}", "service", f"svc{s}", now, "bench") for s in range(99)]
        rel.append(("cyc", "depends_on", "service", "svc0", "service", "svc99", now, "bench"))
        await tx.executemany("INSERT INTO cmdb_relations (id, kind, source_type, source_id, target_type, target_id,"
                             " created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rel)
    feed = [vulns.Advisory(f"DSA-{k}", "high", "bench", [f"CVE-2099-{k:04}"],
                           [vulns.Affected("debian", "12", "openssl", "0", f"3.0.{k}-1~deb12u1")]) for k in range(15)]
    await vulns.import_feed(db, "bench", feed, now)


async def below(db: Database, limit: int | None) -> str:
    """The /api/v1/software?name=openssl&version_lt=… answer (an index range on the version key):
    one page of ``limit`` hits and the total, as the API answers, or every hit (``None``)."""
    rows, total = await software_search.search(db, "openssl", version_lt="3.0.7-1~deb12u1", limit=limit)
    return f"{len(rows)} of {total}"


async def p95(name: str, runs: int, fn: Callable[[], Awaitable[Any]]) -> None:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = await fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    print(f"  {name:<34} p95 {times[int(0.95 * (len(times) - 1))]:7.1f} ms  median {statistics.median(times):6.1f} ms"
          f"  ({result})")


async def bench(url: str, label: str, n: int, runs: int) -> None:
    db = await open_database(url)
    try:
        start = time.perf_counter()
        await populate(db, n)
        print(f"{label}: {n} devices populated in {time.perf_counter() - start:.1f} s")
        await p95("devices with openssl < 3.0.7", runs, lambda: below(db, MAX_SOFTWARE_PAGE))
        await p95("  … every hit in one answer", runs, lambda: below(db, None))
        await p95("primary user of a laptop", runs,
                  lambda: relations.primary_user(db, f"d{n // 2:05}"))
        await p95("what breaks if a server goes down", runs,
                  lambda: _count_breaks(db, ("device", "d00099")))
        await p95("  … level by level (the old walk)", runs,
                  lambda: _count_breaks(db, ("device", "d00099"), one_query=False))
        await p95("impact of a service (5,000-item cut)", runs,
                  lambda: _count_breaks(db, ("service", "svc50")))
        await p95("  … level by level (the old walk)", runs,
                  lambda: _count_breaks(db, ("service", "svc50"), one_query=False))
        await p95("devices exposed to CVE-2099-0007", runs, lambda: _count_exposed(db, MAX_EXPOSED_PAGE))
        await p95("  … every hit in one answer", runs, lambda: _count_exposed(db, None))
    finally:
        await db.close()


async def _count_breaks(db: Database, node: relations.Node, *, one_query: bool = True) -> str:
    result = await relations.impact(db, node, None, one_query=one_query)
    return f"{len(result['breaks'])} + {len(result['needs'])} items, {len(result['cycles'])} cycle edges"


async def _count_exposed(db: Database, limit: int | None) -> str:
    """The /api/v1/cmdb/vulnerabilities/{cve}/devices answer: a page of ``limit`` rows (None: all)."""
    items, _rows, devices = await vulns.exposed(db, "CVE-2099-0007", None, limit=limit)
    return f"{len(items)} rows, {devices} devices"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(f"sqlite:///{tmp}/bench.db", "SQLite", args.devices, args.runs))
    pg = os.environ.get("HELPLINE_TEST_PG_URL")
    if pg:
        asyncio.run(bench(pg, "PostgreSQL (needs an empty database)", args.devices, args.runs))


if __name__ == "__main__":
    main()
