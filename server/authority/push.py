"""Deliver the authority to agents, and hear what they made of it.

On connect, and after every change (``authority.changed``, from any node), each connected agent
that speaks ``authority`` gets the complete picture that concerns it: the root chain (origin and
rotations), every certificate, the newest revocation list, the open documents with at least
one approval that name it or its group, and the old grant key's one-time hand-over when there is one
(only agents enrolled before the org root take it). The agent keeps what verifies against its own pin and
answers ``authority.status``; that report is stored, and audited when it changes.

An update larger than one frame allows is sent in parts (:func:`protocol.authority_parts.split_update`);
the agent applies them as one. On connect the update goes out before the tasks feature delivers runs
(this feature's ready hook is registered first), and the agent holds a run that still overtakes it
(agent/tasks/hold.py). The update sent just before an unattended offer carries only the certificates
that offer's document needs: the agent adds them to what it holds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from protocol.authority import (
    CredentialCert,
    SignedCert,
    SignedDocument,
    SignedRevocationList,
    decode_canonical,
    users_of,
)
from protocol.authority_messages import MAX_CERTS, MAX_DOCUMENTS, AuthorityStatus, AuthorityUpdate
from protocol.authority_parts import TooLarge, split_update

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


async def send_to(server: HelplineServer, conn: AgentConnection, lock: asyncio.Lock | None = None) -> None:
    """The complete update for ``conn``'s device, in as many parts as its size needs; under ``lock`` (one per
    device) the parts of one update are not interleaved with another's (the agent joins consecutive parts)."""
    if not speaks_authority(conn):
        return
    update = await update_for(server.db, conn.device_id, conn.group)
    try:
        parts = split_update(update)
    except TooLarge as exc:
        log.error("the authority update does not fit the control channel; not sent",
                  extra={"device_id": conn.device_id, "reason": str(exc)})
        return
    async with lock or asyncio.Lock():
        for part in parts:
            await conn.send(part)


def setup(server: HelplineServer) -> None:
    #: One per device that connected: pushes from the ready hook and from changes queue behind each other.
    locks: dict[str, asyncio.Lock] = {}

    def lock_of(device_id: str) -> asyncio.Lock:
        return locks.setdefault(device_id, asyncio.Lock())

    async def on_ready(conn: AgentConnection) -> None:
        await send_to(server, conn, lock_of(conn.device_id))

    async def on_changed(_subject: str, _payload: dict[str, Any]) -> None:
        for device_id in server.connections.device_ids():
            conn = server.connections.get(device_id)
            if conn is None:
                continue
            try:
                await send_to(server, conn, lock_of(device_id))
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
    """The incremental update sent just before an unattended offer: the document it names, with the chain and
    the certificates that document needs (one message, whatever the size of the org)."""
    document = repository.signed_of(row)
    update = await update_for(db, device_id, group, complete=False, documents=[document])
    return msgspec.structs.replace(update, certs=needed_certs(update.certs, [document], update.revocations))


def needed_certs(certs: list[SignedCert], documents: list[SignedDocument],
                 revocations: SignedRevocationList | None) -> list[SignedCert]:
    """The certificates a device needs to check ``documents``: their approvers', the technicians they name (by
    credential or by holder name) and the revocation list's signer. The device checks each signature itself;
    this only keeps the update small."""
    wanted_ids: set[str] = {a.credential_id for d in documents for a in d.approvals}
    names: set[str] = set()
    if revocations is not None:
        wanted_ids.add(revocations.approval.credential_id)
    for document in documents:
        body = repository.decode_or_none(document)
        if body is not None:
            ids, holders = users_of(body)
            wanted_ids |= ids
            names |= holders
    kept = []
    for signed in certs:
        try:
            cert = decode_canonical(signed.body, CredentialCert)
        except repository.DECODE_ERRORS:
            continue
        if cert.credential_id in wanted_ids or (cert.kind == "technician" and cert.holder.casefold() in names):
            kept.append(signed)
    return kept
