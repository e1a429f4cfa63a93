"""Helpers shared by the task tests: grants signed with the test server's key, task submission."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

from certs.grants import load_grant_private_key, sign_bytes, sign_grant
from protocol.grants import Action, Grant, SignedGrant, Window
from protocol.tasks import script_signing_bytes
from server.app import HelplineServer
from server.tasks import repository, service
from server.tasks.spec import TaskSpec


def grant_for(server: HelplineServer, *, devices: Sequence[str] = (), groups: Sequence[str] = (),
              actions: Sequence[Action] = ("tasks",), windows: Sequence[Window] = (),
              not_before: float | None = None, not_after: float | None = None,
              technicians: Sequence[str] = ("alice",)) -> SignedGrant:
    now = time.time()
    grant = Grant(grant_id="g" + secrets.token_hex(6), devices=list(devices), groups=list(groups),
                  technicians=list(technicians), actions=list(actions), windows=list(windows),
                  not_before=now - 60 if not_before is None else not_before,
                  not_after=now + 3600 if not_after is None else not_after, issuer="test", issued_at=now)
    return sign_grant(load_grant_private_key(server.pki.grant_key), grant)


def sign_script(server: HelplineServer, script: str, params: dict[str, Any]) -> str:
    return sign_bytes(load_grant_private_key(server.pki.grant_key), script_signing_bytes(script, params))


async def submit(server: HelplineServer, grant: SignedGrant, *, device: str | None = None, group: str | None = None,
                 action: str = "script", params: dict[str, Any] | None = None, script: str | None = None,
                 signature: str | None = None, timeout_s: float = 30, **extra: Any) -> dict[str, Any]:
    from protocol.grants import parse_document

    spec = TaskSpec(action=action, grant_id=parse_document(grant.document).grant_id, technician="alice",
                    params=params or {}, script=script, script_signature=signature, device=device, group=group,
                    timeout_s=timeout_s, grant=grant, **extra)
    return await service.create_task(server.db, spec, actor="admin1")


async def run_of(server: HelplineServer, task_id: str) -> dict[str, Any]:
    runs = await repository.runs_of_task(server.db, task_id)
    assert len(runs) == 1
    return runs[0]
