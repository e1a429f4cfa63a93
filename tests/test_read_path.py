"""No database write on the read path: GET requests keep working when the server's disk is full.

The server's data directory (SQLite database, PKI) sits on a small tmpfs mounted by the test;
the test fills it until SQLite refuses writes, then calls the API with an API token and with a
console cookie — both of which used to write ``last_used``/``last_seen`` on the request — and
checks the remembered uses reach the database once space is back.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.hashing import hash_secret
from server.accounts import admin, authn, sessions, tokens
from server.accounts.usage import UsageLedger
from server.store import Database
from tests.harness import running_server, wait_until
from tests.test_accounts_support import client, cookie_value, login, make_user


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 16 MiB tmpfs of its own (unmounted at the end): a disk the test can fill."""
    mountpoint = Path(tempfile.mkdtemp(prefix="hl-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)
        mountpoint.rmdir()


def fill(directory: Path) -> Path:
    """Write zeros into ``directory/filler`` until the file system says it is full."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while os.write(fd, b"\0" * size) == size:
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


async def test_get_requests_work_with_the_disk_full_and_uses_are_written_afterwards(
        small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Disk full: token and cookie GETs answer 200; the failed flush is logged once, retried, and lands later."""
    data = small_disk / "srv"
    # SQLite on the tmpfs even when the suite runs the harness on PostgreSQL: this is about this disk.
    async with running_server(data, database_url=f"sqlite:///{data / 'helpline.db'}",
                              auth_usage_flush_s=0.2) as server:
        ledger = server.console_app[authn.USAGE]
        acct = await make_user(server, "dana", "admin")
        token = await admin.create_token(server.db, acct.user_id, "script", None, actor="test")
        async with client(server) as http:
            cookie = cookie_value((await login(http, acct)).set_cookie)
        session = await server.db.fetchone("SELECT id FROM console_sessions WHERE token_hash = ?",
                                           (hash_secret(cookie),))
        assert session is not None
        # Both checks are due a refresh: the token was never used, the session was last seen 2 min ago.
        seen_before = time.time() - 120
        await server.db.execute("UPDATE console_sessions SET last_seen = ? WHERE id = ?", (seen_before, session["id"]))
        # Empty the WAL so that any later write needs new blocks, then fill the disk.
        await server.db.fetchone("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = fill(small_disk)
        # sqlite3's error, or the store's translation of it (StoreUnavailable): either way, no writes.
        with pytest.raises(Exception, match="disk is full"):
            await server.db.execute("UPDATE api_tokens SET last_used = ? WHERE id = ?", (time.time(), token.id))

        caplog.set_level(logging.WARNING, logger="server.accounts.usage")
        async with client(server, Authorization=f"Bearer {token.token}") as http:
            for path in ("/api/v1/devices", "/api/v1/auth/me", "/api/v1/alerts"):
                async with http.get(path) as resp:
                    assert resp.status == 200, (path, await resp.text())
        async with client(server) as http:
            http.cookie_jar.update_cookies({"__Host-helpline": cookie})
            for path in ("/api/v1/devices", "/api/v1/auth/me", "/api/v1/auth/sessions"):
                async with http.get(path) as resp:
                    assert resp.status == 200, (path, await resp.text())
        await wait_until(lambda: ledger.failed_flushes >= 3, timeout=30, what="several failed flushes")
        assert len(ledger) == 2  # both uses kept for the retry
        failures = [r for r in caplog.records if "last-use times failed" in r.getMessage()]
        assert len(failures) == 1 and "full" in failures[0].getMessage()

        filler.unlink()

        async def written() -> bool:
            tok = await server.db.fetchone("SELECT last_used FROM api_tokens WHERE id = ?", (token.id,))
            ses = await server.db.fetchone("SELECT last_seen FROM console_sessions WHERE id = ?", (session["id"],))
            return bool(tok and tok["last_used"] is not None and ses and ses["last_seen"] > seen_before + 60)

        await wait_until(written, timeout=30, what="the remembered uses written once space is back")
        assert len(ledger) == 0
        assert any("works again" in r.getMessage() for r in caplog.records)


async def test_a_session_in_use_does_not_idle_out_while_its_refresh_is_unwritten(tmp_path: Path) -> None:
    """The idle timeout counts the remembered use, not only the stored one."""
    async with running_server(tmp_path / "srv", auth_usage_flush_s=3600) as server:
        acct = await make_user(server, "ivo", "viewer")
        async with client(server) as http:
            first = await login(http, acct)
            row = await server.db.fetchone("SELECT id FROM console_sessions WHERE token_hash = ?",
                                           (hash_secret(cookie_value(first.set_cookie)),))
            assert row is not None
            idle = server.console_app[authn.USAGE]
            # Stored: seen just under the idle limit ago, so this request refreshes it (in memory only).
            await server.db.execute("UPDATE console_sessions SET last_seen = ? WHERE id = ?",
                                    (time.time() - sessions.IDLE_S + 5, row["id"]))
            async with http.get("/api/v1/auth/me") as resp:
                assert resp.status == 200
            assert len(idle) == 1
            await server.db.execute("UPDATE console_sessions SET last_seen = ? WHERE id = ?",
                                    (time.time() - sessions.IDLE_S - 1, row["id"]))
            async with http.get("/api/v1/auth/me") as resp:
                assert resp.status == 200  # the stored time alone would have ended it


async def test_flush_writes_the_newest_use_and_never_moves_a_time_back(db: Database) -> None:
    """One flush writes every remembered use; a time already newer in the database is kept."""
    created = await admin.create_account(db, "fay", "viewer", actor="test", password="pw-fay-0123456789")
    async with db.transaction() as tx:
        token = await tokens.create(tx, created.user.id, "t", None)
        session = await sessions.create(tx, created.user.id, now=1000.0)
    ledger = UsageLedger()
    ledger.token_used(token.id, 2000.0)
    ledger.token_used(token.id, 1500.0)  # an older use does not win
    ledger.session_seen(session.id, 900.0)  # older than the stored 1000: left alone
    assert await ledger.flush(db) and len(ledger) == 0
    tok = await db.fetchone("SELECT last_used FROM api_tokens WHERE id = ?", (token.id,))
    ses = await db.fetchone("SELECT last_seen FROM console_sessions WHERE id = ?", (session.id,))
    assert tok is not None and tok["last_used"] == 2000.0
    assert ses is not None and ses["last_seen"] == 1000.0
    assert ledger.session_last_seen(session.id, 1000.0) == 1000.0
    ledger.session_seen(session.id, 3000.0)
    assert ledger.session_last_seen(session.id, 1000.0) == 3000.0
    assert await ledger.flush(db)
    ses = await db.fetchone("SELECT last_seen FROM console_sessions WHERE id = ?", (session.id,))
    assert ses is not None and ses["last_seen"] == 3000.0
