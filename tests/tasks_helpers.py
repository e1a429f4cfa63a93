"""Helpers shared by the task tests: an org whose approvers sign task authorizations, and task submission.

The org's keys live in the test (as on the approvers' machines); the server gets the public halves and
the signed documents, stored through its own repository (what ``helpline trust publish`` and ``helpline
approve submit`` upload). An agent runs tasks only when pinned to the org's root (:func:`pinned`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from agent.config import AgentConfig
from agent.runtime import Agent
from agent.state import AgentState
from protocol.authority import SignedDocument, TaskAuthorization, decode_body
from protocol.grants import Window
from server.app import HelplineServer
from server.authority import repository as documents
from server.store import Database, Row
from server.tasks import repository, service
from server.tasks.spec import TaskSpec
from tests.authority_helpers import Org, make_org
from tests.harness import RunningAgent, running_agent, wait_until

__all__ = ["SHARED_ORG", "Org", "authorize", "make_org", "pinned", "publish_authority", "run_of", "signed_spec",
           "store", "submit", "task_agent"]


def authorize(org: Org, *, devices: Sequence[str] = (), groups: Sequence[str] = (), action: str = "script",
              script: str | None = None, params: dict[str, Any] | None = None, schedule: str | None = None,
              windows: Sequence[Window] = (), not_before: float | None = None, not_after: float | None = None,
              signers: Sequence[str] = ("alice", "bob"), task_id: str | None = None) -> SignedDocument:
    """A TaskAuthorization approvers signed: ``script``'s SHA-256 for the script action."""
    now = time.time()
    body = TaskAuthorization(
        task_id=task_id or "task-" + secrets.token_hex(6), action=action,
        script_sha256=hashlib.sha256(script.encode()).hexdigest() if script is not None else None,
        params=dict(params or {}), devices=list(devices), groups=list(groups), schedule=schedule,
        windows=list(windows), not_before=now - 60 if not_before is None else not_before,
        not_after=now + 3600 if not_after is None else not_after, issuer="Alice", issued_at=now)
    return org.sign("task", body, signers)


async def store(db: Database, document: SignedDocument) -> str:
    """Store a document as ``helpline approve submit`` would (once); returns its id."""
    body = decode_body(document.kind, document.body)
    assert isinstance(body, TaskAuthorization)
    if await documents.get_document(db, body.task_id) is None:
        await documents.create_document(db, document, actor="user:test")
    return body.task_id


async def publish_authority(db: Database, org: Org) -> None:
    """What ``helpline trust publish`` uploads: the root, the certificates and a fresh revocation list."""
    async with db.transaction() as tx:
        await documents.put_root(tx, org.root, replace=False, actor="user:test")
        for cert in org.certs:
            await documents.put_cert(tx, cert, actor="user:test")
        await documents.put_revocations(tx, org.revocations(), actor="user:test")


def pinned(state: AgentState, org: Org) -> AgentConfig:
    """The agent's configuration as the administrator deploys it: the org root's fingerprint pinned."""
    return AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, trust_root_sha256=org.root.fingerprint)


@asynccontextmanager
async def task_agent(server: HelplineServer, state: AgentState, org: Org,
                     setup: Callable[[Agent], None] | None = None) -> AsyncIterator[RunningAgent]:
    """A running agent pinned to ``org``, once it holds the org's authority (the server relayed it)."""
    await publish_authority(server.db, org)
    async with running_agent(state, pinned(state, org), setup=setup) as agent:
        store_ = agent.parts.authority.store
        await wait_until(lambda: store_.unattended_problem(time.time()) == "", timeout=15,
                         what="the agent holds the org's authority")
        yield agent


async def submit(server: HelplineServer, document: SignedDocument, *, device: str | None = None,
                 group: str | None = None, action: str | None = None, params: dict[str, Any] | None = None,
                 script: str | None = None, timeout_s: float = 30, **extra: Any) -> Row:
    """Store ``document`` and create a task under it (action, params and schedule default to the document's)."""
    doc_id = await store(server.db, document)
    body = decode_body("task", document.body)
    assert isinstance(body, TaskAuthorization)
    spec = TaskSpec(action=action or body.action, document_id=doc_id, technician="alice",
                    params=dict(body.params) if params is None else params, script=script, device=device, group=group,
                    timeout_s=timeout_s, **({"cron": body.schedule} | extra))
    return await service.create_task(server.db, spec, actor="admin1")


#: The org of tests that only need the server to find a matching document (no agent verifies it there).
SHARED_ORG = make_org()


async def signed_spec(db: Database, *, org: Org | None = None, **fields: Any) -> TaskSpec:
    """A TaskSpec (``fields`` as TaskSpec takes them, without ``document_id``) whose matching task authorization
    — its action, parameters, script, schedule and target, approved by two approvers — is stored."""
    fields.setdefault("technician", "alice")
    document = authorize(org or SHARED_ORG, devices=[fields["device"]] if fields.get("device") else [],
                         groups=[fields["group"]] if fields.get("group") else [], action=fields["action"],
                         script=fields.get("script"), params=fields.get("params") or {}, schedule=fields.get("cron"))
    return TaskSpec(document_id=await store(db, document), **fields)


async def run_of(server: HelplineServer, task_id: str) -> dict[str, Any]:
    runs = await repository.runs_of_task(server.db, task_id)
    assert len(runs) == 1
    return runs[0]
