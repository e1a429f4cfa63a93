"""The task listing filters by the caller's groups in SQL and pages by key, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

from server.store import Database
from server.tasks import repository, service, views
from tests.conftest import add_device
from tests.tasks_helpers import signed_spec


async def _make(database: Database, device: str, count: int, start: float) -> list[str]:
    ids = []
    for i in range(count):
        row = await service.create_task(database, await signed_spec(
            database, action="updates", params={"mode": "check"}, device=device), actor="admin1", now=start + i)
        ids.append(row["id"])
    return ids


async def test_foreign_tasks_outnumbering_own_do_not_hide_them(db: Database) -> None:
    """With more newer tasks in a foreign group than the page size, a technician still gets full pages of theirs."""
    own_device = await add_device(db, "dev-own", "lab")
    foreign_device = await add_device(db, "dev-far", "elsewhere")
    t0 = time.time() - 10_000
    own = await _make(db, own_device, 7, t0)
    foreign = await _make(db, foreign_device, 12, t0 + 100)  # all newer than every own task

    first = await repository.list_tasks(db, groups={"lab"}, limit=4)
    assert [r["id"] for r in first] == own[::-1][:4]
    second = await repository.list_tasks(db, groups={"lab"}, limit=4, before=views.parse_cursor(
        views.page_cursor(first[-1])))
    assert [r["id"] for r in second] == own[::-1][4:]
    assert await repository.list_tasks(db, groups=set(), limit=4) == []
    everything = await repository.list_tasks(db, groups=None, limit=50)
    assert [r["id"] for r in everything] == (own + foreign)[::-1]


async def test_cursor_with_equal_timestamps_neither_repeats_nor_skips(db: Database) -> None:
    """Tasks created in the same instant are split across pages by id without repeats or gaps."""
    device = await add_device(db, "dev-1", "lab")
    ids = set(await _make(db, device, 1, 5000.0))
    for _ in range(4):
        ids |= set(await _make(db, device, 1, 5000.0))
    seen: list[str] = []
    before = None
    while True:
        page = await repository.list_tasks(db, groups={"lab"}, limit=2, before=before)
        seen += [r["id"] for r in page]
        if len(page) < 2:
            break
        before = views.parse_cursor(views.page_cursor(page[-1]))
    assert sorted(seen) == sorted(ids) and len(seen) == len(ids)
