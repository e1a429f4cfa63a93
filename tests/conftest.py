"""Shared fixtures (kept small and generic)."""

from __future__ import annotations

import os

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
