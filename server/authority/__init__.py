"""Authority on the server: stored and relayed, never made (issue 11).

The server keeps the org root's public half and its rotations, credential certificates, revocation
lists and approver-signed documents (:mod:`.repository`), shows them (:mod:`.views`, :mod:`.api`),
pushes them to agents and stores what each agent reports (:mod:`.push`). It holds no key that
authorizes anything on a device; each device checks everything against the root it was installed
with. The unattended-session challenge and the technician's proof pass through
:mod:`server.sessions` (``session.challenge`` → ``POST /api/v1/sessions/{id}/proof`` → ``session.proof``).
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
