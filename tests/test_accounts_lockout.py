"""The login lockout holds under concurrency: an attempt is reserved in the database before the slow hash, so
parallel guesses cannot all be checked before any is counted (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from server.accounts import admin, login, passwords, totp
from server.accounts.login import MAX_FAILURES, LoginService
from server.store import Database

PASSWORD = "the-right-password-42"


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password actually checked with scrypt (the real function still runs)."""
    checked: list[str] = []
    real = passwords.verify_password

    def counting(password: str, encoded: str) -> bool:
        checked.append(password)
        return real(password, encoded)

    monkeypatch.setattr(passwords, "verify_password", counting)
    return checked


async def test_parallel_wrong_guesses_are_capped_at_the_threshold(db: Database, hashes: list[str]) -> None:
    """20 concurrent wrong logins: at most MAX_FAILURES are hashed, the rest are refused as locked (423), the account
    ends up locked, and then even the right password and code are refused."""
    created = await admin.create_account(db, "lou", "viewer", actor="test", password=PASSWORD)
    service = LoginService(db, per_address=1000)
    outcomes = await asyncio.gather(*(service.login("lou", f"guess-{i:02d}-wrong", "000000", peer=f"10.0.0.{i}")
                                      for i in range(20)))
    statuses = Counter(o.status for o in outcomes)
    assert len([p for p in hashes if p.startswith("guess-")]) <= MAX_FAILURES
    assert statuses == {401: MAX_FAILURES, 423: 20 - MAX_FAILURES}, statuses
    row = await db.fetchone("SELECT locked_until FROM users WHERE id = ?", (created.user.id,))
    assert row is not None and row["locked_until"] > time.time()
    right = await service.login("lou", PASSWORD, totp.code_at(created.totp_secret, time.time()))
    assert right.status == 423 and PASSWORD not in hashes


async def test_a_right_password_waiting_for_its_code_is_not_a_failure(db: Database) -> None:
    """The first step of a login (right password, code still to come) neither counts as a failure nor locks, and a
    success clears earlier failures."""
    created = await admin.create_account(db, "ann", "viewer", actor="test", password=PASSWORD)
    service = LoginService(db, per_address=1000)
    for _ in range(MAX_FAILURES - 1):
        assert (await service.login("ann", "wrong-password-00", None)).status == 401
    for _ in range(2):  # without giving the reservation back, the second would meet the threshold
        outcome = await service.login("ann", PASSWORD, None)
        assert (outcome.status, outcome.code) == (401, "totp_required")
    ok = await service.login("ann", PASSWORD, totp.code_at(created.totp_secret, time.time()))
    assert ok.ok
    row = await db.fetchone("SELECT failed_logins, locked_until FROM users WHERE id = ?", (created.user.id,))
    assert row == {"failed_logins": 0, "locked_until": None}
    assert login.LOCKOUT_S > 0
