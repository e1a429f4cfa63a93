"""Deliver the authority to agents, and hear what they made of it.

On connect, and after every change (``authority.changed``, from any node), each connected agent
that speaks ``authority`` gets the complete picture that concerns it: the root chain (origin and
rotations), every certificate, the newest revocation list, the open documents with at least
one approval that name it or its group, and the old grant key's one-time hand-over when there is one
(only agents enrolled before the org root take it). The agent keeps what verifies against its own pin and
answers ``authority.status``; that report is stored, and audited when it changes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec

from protocol.authority import SignedDocument
from protocol.authority_messages import MAX_CERTS, MAX_DOCUMENTS, AuthorityStatus, AuthorityUpdate

from .. import audit
from ..store import Database, Row
from . import repository

if TYPE_CHECKING:
    from ..agent_channel import AgentConnection
    from ..app import HelplineServer

log = logging.getLogger(__name__)

#: The hello capability of agents that take ``authority.update``.
CAPABILITY = "authority"


def speaks_authority(conn: AgentConnection) -> bool:
    return conn.hello is not None and CAPABILITY in conn.hello.capabilities


async def update_for(db: Database, device_id: str, group: str, *, complete: bool = True,
                     documents: list[SignedDocument] | None = None) -> AuthorityUpdate:
    """Everything that concerns one device (``documents`` given: just those, as an incremental update)."""
    chain = await repository.chain(db)
    withdrawn: list[str] = []
    if documents is None:
        documents = []
        for row in await repository.list_documents(db):
            if not repository.concerns(row, device_id, group):
                continue
            if row["status"] == "withdrawn":
                withdrawn.append(row["document_id"])
            elif repository.approvals_of(row):
                documents.append(repository.signed_of(row))
    certs = (await repository.certs(db))[-MAX_CERTS:]
    return AuthorityUpdate(root=chain.origin, rotations=chain.rotations, certs=certs,
                           revocations=await repository.latest_revocations(db), documents=documents[:MAX_DOCUMENTS],
                           withdrawn=withdrawn[:MAX_DOCUMENTS], complete=complete,
                           handover=await repository.latest_handover(db))


async def send_to(server: HelplineServer, conn: AgentConnection) -> None:
    if speaks_authority(conn):
        await conn.send(await update_for(server.db, conn.device_id, conn.group))


def setup(server: HelplineServer) -> None:
    async def on_ready(conn: AgentConnection) -> None:
        await send_to(server, conn)

    async def on_changed(_subject: str, _payload: dict[str, Any]) -> None:
        for device_id in server.connections.device_ids():
            conn = server.connections.get(device_id)
            if conn is None:
                continue
            try:
                await send_to(server, conn)
            except Exception:
                log.exception("could not push the authority", extra={"device_id": device_id})

    async def on_status(conn: AgentConnection, status: AuthorityStatus) -> None:
        report = msgspec.to_builtins(status)
        changed = await repository.record_status(server.db, conn.device_id, report)
        if status.refused or status.problem:
            log.warning("agent refused authority", extra={"device_id": conn.device_id, "problem": status.problem,
                                                          "refused": [r.document_id for r in status.refused][:16]})
        if changed:
            await audit.append(server.db, f"device:{conn.device_id}", "authority.status", conn.device_id, {
                "root_fingerprint": status.root_fingerprint, "unattended_ok": status.unattended_ok,
                "problem": status.problem, "revocation_sequence": status.revocation_sequence,
                "accepted": status.accepted[:64],
                "refused": [{"document_id": r.document_id, "reason": r.reason} for r in status.refused][:64]})

    async def register_watcher() -> None:
        assert server.watcher is not None
        server.watcher.on(repository.AUTHORITY_CHANGED, on_changed)

    server.on_agent_ready.append(on_ready)
    server.agent_handlers.register(AuthorityStatus, on_status)
    server.background.append(register_watcher)


async def document_for_offer(db: Database, row: Row, device_id: str, group: str) -> AuthorityUpdate:
    """The incremental update sent just before an unattended offer: the document it names, with the chain."""
    return await update_for(db, device_id, group, complete=False, documents=[repository.signed_of(row)])
