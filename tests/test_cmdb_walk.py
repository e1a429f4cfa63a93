"""The impact walk's one-query graph (recursive CTE, issue 17) gives exactly the level-by-level walk's answer —
depths, the item each was reached from, cycle edges, truncation — on a random graph with cycles, on the
store under test (SQLite, or PostgreSQL with HELPLINE_TEST_STORE=postgresql)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from server.cmdb import relations
from tests.harness import running_server


async def test_one_query_walk_equals_level_by_level_walk(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every start, both directions, with and without a cut: the same Walk, from the one query alone."""
    rng = random.Random(17)
    now = time.time()
    devices = [f"d{i}" for i in range(60)]
    services = [f"s{i}" for i in range(25)]
    edges: set[tuple[str, str, str, str, str]] = set()
    for d in devices:
        for s in rng.sample(services, rng.randint(0, 2)):
            edges.add(("runs", "device", d, "service", s))
    for _ in range(70):
        a, b = rng.sample(services + devices[:10], 2)
        edges.add(("depends_on", "service" if a in services else "device", a,
                   "service" if b in services else "device", b))
    async with running_server(tmp_path / "srv") as server:
        async with server.db.transaction() as tx:
            await tx.execute("INSERT INTO device_groups (name, created_at) VALUES ('g', ?) ON CONFLICT DO NOTHING",
                             (now,))
            await tx.executemany("INSERT INTO devices (id, group_name, hostname, status, cert_serial, cert_not_after,"
                                 " enrolled_at) VALUES (?, 'g', ?, 'active', ?, ?, ?)",
                                 [(d, d, "s" + d, now + 86400, now) for d in devices])
            await tx.executemany("INSERT INTO cmdb_services (id, name, created_at, created_by) VALUES (?, ?, ?, 't')",
                                 [(s, s, now) for s in services])
            await tx.executemany("INSERT INTO cmdb_relations (id, kind, source_type, source_id, target_type, target_id,"
                                 " created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, 't')",
                                 [(f"r{i}", *e, now) for i, e in enumerate(sorted(edges))])
        starts = [("device", d) for d in devices] + [("service", s) for s in services]
        fast = {(start, down): await relations.walk(server.db, start, downstream=down)
                for start in starts for down in (True, False)}
        capped_fast = await relations.walk(server.db, ("service", "s0"), downstream=False, max_nodes=5)
        cycles = 0
        for (start, down), got in fast.items():
            slow = await relations.walk(server.db, start, downstream=down, one_query=False)
            assert (got.depth, got.via, got.cycles, got.truncated) == \
                (slow.depth, slow.via, slow.cycles, slow.truncated), (start, down)
            cycles += len(got.cycles)
        assert cycles > 0 and max(len(w.depth) for w in fast.values()) > 20  # the graph has cycles and depth
        capped_slow = await relations.walk(server.db, ("service", "s0"), downstream=False, max_nodes=5,
                                           one_query=False)
        assert capped_fast.truncated and len(capped_fast.depth) == 5
        assert (capped_fast.depth, capped_fast.via) == (capped_slow.depth, capped_slow.via)

        cut = 0
        for cap in (3, 8, 20):  # cut walks: the capped graph gives the level-by-level cut, without falling back
            for start in starts:
                for down in (True, False):
                    got = await relations.walk(server.db, start, downstream=down, max_nodes=cap)
                    slow = await relations.walk(server.db, start, downstream=down, max_nodes=cap, one_query=False)
                    assert (got.depth, got.via, got.cycles, got.truncated) == \
                        (slow.depth, slow.via, slow.cycles, slow.truncated), (start, down, cap)
                    cut += got.truncated
        assert cut > 50
        assert not [r for r in caplog.records if "level by level" in r.getMessage()]
