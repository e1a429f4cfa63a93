"""Shared fixtures (kept small and generic)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture
def pg_url() -> str:
    """PostgreSQL URL from HELPLINE_TEST_PG_URL; skipped locally when unset, a failure under CI."""
    url = os.environ.get("HELPLINE_TEST_PG_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("HELPLINE_TEST_PG_URL is not set under CI: PostgreSQL tests cannot run")
        pytest.skip("HELPLINE_TEST_PG_URL not set")
    return url


@pytest.fixture(scope="session", autouse=True)
def _drop_e2e_pg_schemas() -> Iterator[None]:
    """With HELPLINE_TEST_STORE=postgresql, drop the per-data-dir schemas the harness made."""
    yield
    from tests import pg_store

    pg_store.drop_all()
