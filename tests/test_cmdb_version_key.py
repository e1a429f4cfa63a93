"""The sortable version key (issue 17): byte order equals versions.compare's order (and dpkg's on
this machine's real versions), and the fleet search answers "below Y" exactly from the index,
including rows stored before migration 13 (no key yet) and after the start-up back-fill."""

from __future__ import annotations

import itertools
import subprocess
import tempfile
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from server.cmdb import software_search, versions
from server.store import open_database

VERSION_CHARS = st.sampled_from([*"0123456789.~+-:abzAZ_", "é", "٣", "ß"])
VERSIONS = st.text(VERSION_CHARS, max_size=12)
EDGES = ["", "0", "00", "1", "1.", "1.0", "1.00", "1.0~", "1.0~~", "1.0.0", "1.0a", "1.0+", "0.5", "0~1", "~", "1:0",
         "1:1.0-1", "1.0-1~b", "1.0-0", "1.0-", "3.0.7-1~deb12u1", "3.0.11-1~deb12u2", "3.0.11-1", "10", "9"]


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


@settings(max_examples=3000, deadline=None)
@given(VERSIONS, VERSIONS)
def test_key_order_is_compare_order(a: str, b: str) -> None:
    """For any two versions the key bytes order exactly as compare() does (equal when equal)."""
    expected = versions.compare(a, b)
    ka, kb = versions.key(a), versions.key(b)
    assert _sign((ka > kb) - (ka < kb)) == expected, (a, b, ka, kb)


def test_key_edges_pairwise() -> None:
    """Tilde, empty runs, trailing zeros, epochs and revisions: every pair of edge cases."""
    for a in EDGES:
        for b in EDGES:
            ka, kb = versions.key(a), versions.key(b)
            assert _sign((ka > kb) - (ka < kb)) == versions.compare(a, b), (a, b)


def test_key_agrees_with_dpkg_on_real_versions() -> None:
    """The installed packages' versions sorted by key are in dpkg --compare-versions order."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}\n"], capture_output=True, text=True, check=True).stdout
    real = sorted(set(out.split()), key=versions.key)[:: max(1, len(set(out.split())) // 40)]
    assert len(real) >= 10
    for older, newer in itertools.pairwise(real):
        if versions.key(older) == versions.key(newer):
            continue
        assert subprocess.run(["dpkg", "--compare-versions", older, "lt", newer]).returncode == 0, (older, newer)


async def test_search_below_uses_keys_and_legacy_rows_are_exact() -> None:
    """Rows without a key (stored before migration 13) are still judged exactly; the back-fill keys
    them and the answer stays the same."""
    with tempfile.TemporaryDirectory() as tmp:
        db = await open_database(f"sqlite:///{Path(tmp) / 't.db'}")
        try:
            now = time.time()
            vers = ["3.0.9-1", "3.0.13-1", "3.0.13~rc1-1", "1:1.0-1", "3.0.2", "3.0.11-1~deb12u2"]
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO device_groups (name, created_at) VALUES ('g', ?)", (now,))
                for i, v in enumerate(vers):
                    await tx.execute("INSERT INTO devices (id, group_name, hostname, status, cert_serial,"
                                     " cert_not_after, enrolled_at) VALUES (?, 'g', ?, 'active', ?, ?, ?)",
                                     (f"d{i}", f"h{i}", f"s{i}", now + 86400, now))
                    key = software_search.version_key(v) if i % 2 else None  # half are "legacy" rows
                    await tx.execute("INSERT INTO software (device_id, name, version, arch, source, vendor,"
                                     " version_key) VALUES (?, 'openssl', ?, 'amd64', 'dpkg', '', ?)",
                                     (f"d{i}", v, key))
            want = sorted(f"d{i}" for i, v in enumerate(vers) if versions.compare(v, "3.0.13") < 0)
            assert want == ["d0", "d2", "d4", "d5"]
            oldest_first = ["d4", "d0", "d5", "d2"]  # 3.0.2, 3.0.9-1, 3.0.11-1~deb12u2, 3.0.13~rc1-1
            hits, total = await software_search.search(db, "openssl", version_lt="3.0.13")
            assert [r["device_id"] for r in hits] == oldest_first and total == 4
            page, total = await software_search.search(db, "openssl", version_lt="3.0.13", limit=2, offset=2)
            assert [r["device_id"] for r in page] == oldest_first[2:] and total == 4
            assert await software_search.backfill_keys(db, batch=2) == 3
            assert await db.fetchone("SELECT 1 AS x FROM software WHERE version_key IS NULL") is None
            hits, total = await software_search.search(db, "openssl", version_lt="3.0.13")
            assert [r["device_id"] for r in hits] == oldest_first and total == 4
            page, total = await software_search.search(db, "openssl", version_lt="3.0.13", limit=3, offset=3)
            assert [r["device_id"] for r in page] == oldest_first[3:] and total == 4  # from the key range alone
            assert (await software_search.search(db, "openssl", version_lt="3.0.13", groups=set()))[0] == []
        finally:
            await db.close()
