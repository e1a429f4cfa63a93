"""The audit chain's head is kept outside the database (``audit-anchor`` in the data directory), so
``helpline admin audit verify`` detects the newest records deleted — and still a record edited in the middle."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from helpline.cli import main
from server import audit
from server.audit_anchor import COMPACT_AT, AuditAnchor, Head, read_head
from tests.harness import running_server, wait_until


async def _verify(data: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["admin", "audit", "verify", "--data", str(data), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def test_deleting_the_newest_records_is_detected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Records appended by the server advance the 0600 anchor; deleting the newest rows with SQL makes verify
    report "truncated: the log ends at N but the anchor says M"; an edited middle record is still found."""
    data = tmp_path / "srv"
    async with running_server(data) as server:
        for i in range(6):
            await audit.append(server.db, "test", "thing.done", str(i), {"i": i})
        newest = await audit.head(server.db)
        assert newest is not None
        anchor = data / "audit-anchor"
        assert read_head(anchor) == newest and stat.S_IMODE(anchor.stat().st_mode) == 0o600
        code, out = await _verify(data, capsys)
        assert code == 0 and f"the anchor's head (record {newest.seq}) is there" in out, out

        await server.db.execute("DELETE FROM audit_log WHERE seq > ?", (newest.seq - 2,))
        code, out = await _verify(data, capsys)
        assert code == 1, out
        assert f"truncated: the log ends at {newest.seq - 2} but the anchor says {newest.seq}" in out, out
        report = await audit.verify_with_anchor(server.db)  # what GET /api/v1/audit/verify answers
        assert not report.ok and report.first_bad_seq == newest.seq - 1

        await server.db.execute("UPDATE audit_log SET target = 'forged' WHERE seq = 2")
        code, out = await _verify(data, capsys)
        assert code == 1 and "BROKEN at record 2: record content does not match its hash" in out, out


async def test_a_rewritten_tail_is_detected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Deleting the newest records and appending as many new ones (a chain that links again up to the anchor's
    sequence number) does not hide it: the record at the anchor's sequence has another hash."""
    data = tmp_path / "srv"
    async with running_server(data) as server:
        for i in range(4):
            await audit.append(server.db, "test", "thing.done", str(i))
        newest = await audit.head(server.db)
        assert newest is not None
        await server.db.execute("DELETE FROM audit_log WHERE seq > ?", (newest.seq - 2,))
        async with server.db.transaction() as tx:  # an intruder's own, correctly chained records
            for i in range(2):
                await audit.append_in(tx, "intruder", "nothing.to.see", str(i))
        code, out = await _verify(data, capsys)
        assert code == 1 and f"record {newest.seq} differs from the anchor" in out, out


async def test_records_appended_inside_transactions_are_anchored(tmp_path: Path) -> None:
    """append_in (records committed with other changes) reaches the anchor through the server's background task."""
    async with running_server(tmp_path / "srv") as server:
        async with server.db.transaction() as tx:
            for i in range(3):
                await audit.append_in(tx, "test", "batch.item", str(i))
        newest = await audit.head(server.db)
        assert newest is not None
        await wait_until(lambda: read_head(tmp_path / "srv" / "audit-anchor") == newest, what="the anchor catches up")


async def test_without_an_anchor_verify_says_what_it_cannot_see(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """An install with no anchor yet verifies the chain and says truncation would go unnoticed; --anchor reads
    another node's copy."""
    data = tmp_path / "srv"
    async with running_server(data) as server:
        await audit.append(server.db, "test", "thing.done")
    copy = tmp_path / "node-b-anchor"
    copy.write_bytes((data / "audit-anchor").read_bytes())
    (data / "audit-anchor").unlink()
    code, out = await _verify(data, capsys)
    assert code == 0 and "no anchor at" in out, out
    code, out = await _verify(data, capsys, "--anchor", str(copy))
    assert code == 0 and "the anchor's head" in out, out


def test_anchor_file_is_append_only_monotonic_and_compacted(tmp_path: Path) -> None:
    """Older heads are never written after newer ones; a torn last line is ignored; past COMPACT_AT bytes the
    file keeps only its newest head."""
    path = tmp_path / "audit-anchor"
    anchor = AuditAnchor(path)
    assert anchor.advance(Head(5, "a" * 64)) and not anchor.advance(Head(4, "b" * 64))
    with path.open("a") as f:
        f.write("6 cccc")  # torn write
    assert read_head(path) == Head(5, "a" * 64)
    assert AuditAnchor(path).advance(Head(6, "d" * 64)) and read_head(path) == Head(6, "d" * 64)
    lines = COMPACT_AT // 60 + 10  # ~71 bytes a line: past COMPACT_AT
    for seq in range(7, 7 + lines):
        anchor.advance(Head(seq, f"{seq:064x}"))
    assert path.stat().st_size < COMPACT_AT and "a" * 64 not in path.read_text()  # compacted once
    assert read_head(path) == Head(6 + lines, f"{6 + lines:064x}")
