"""REST API under /api/v1 (filled in below)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.app import HelplineServer


def register(server: HelplineServer) -> None:
    """Add the CMDB routes to the console app."""
