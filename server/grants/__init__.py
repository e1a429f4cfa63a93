"""Unattended-access grants on the server: store, API (routes and response schemas), signing, push to agents.

The server signs a grant with the org grant key only once it is approved (at creation
when four-eyes approval is off). Agents verify every signature themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..app import HelplineServer


def setup(server: HelplineServer) -> None:
    from .api import setup as setup_api
    from .push import setup as setup_push

    setup_api(server)
    setup_push(server)
