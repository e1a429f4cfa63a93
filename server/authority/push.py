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
from protocol.authority_messages import MAX_DOCUMENTS, AuthorityStatus, AuthorityUpdate
from protocol.authority_parts import TooLarge, split_update

from .. import audit
from ..store import Database, Row
from . import repository, snapshot

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
    """Everything that concerns one device, read now (``documents`` given: just those, as an incremental
    update)."""
    return update_from(await snapshot.read(db), device_id, group, complete=complete, documents=documents)


def update_from(shared: snapshot.Snapshot, device_id: str, group: str, *, complete: bool = True,
                documents: list[SignedDocument] | None = None) -> AuthorityUpdate:
    """One device's update from the org's shared part (``documents`` given: just those)."""
    withdrawn: list[str] = []
    if documents is None:
        documents = []
        for row, signed in shared.documents:
            if not repository.concerns(row, device_id, group):
                continue
            if row["status"] == "withdrawn":
                withdrawn.append(row["document_id"])
            elif signed is not None:
                documents.append(signed)
    return AuthorityUpdate(root=shared.root, rotations=shared.rotations, certs=shared.certs,
                           revocations=shared.revocations, documents=documents[:MAX_DOCUMENTS],
                           withdrawn=withdrawn[:MAX_DOCUMENTS], complete=complete, handover=shared.handover)


async def send_to(server: HelplineServer, conn: AgentConnection, lock: asyncio.Lock | None = None,
                  cache: snapshot.SnapshotCache | None = None) -> None:
    """The complete update for ``conn``'s device, in as many parts as its size needs; under ``lock`` (one per
    device) the parts of one update are not interleaved with another's (the agent joins consecutive parts)."""
    if not speaks_authority(conn):
        return
    async with lock or asyncio.Lock():  # built under the lock too: the newest picture is always the last sent
        shared = await cache.get(server.db) if cache is not None else await snapshot.read(server.db)
        await send_update(conn, update_from(shared, conn.device_id, conn.group))


async def send_update(conn: AgentConnection, update: AuthorityUpdate, lock: asyncio.Lock | None = None) -> None:
    """``update`` to ``conn``, in as many parts as its size needs, under ``lock``."""
    try:
        parts = split_update(update)
    except TooLarge as exc:
        log.error("the authority update does not fit the control channel; not sent",
                  extra={"device_id": conn.device_id, "reason": str(exc)})
        return
    async with lock or asyncio.Lock():
        for part in parts:
            await conn.send(part)


#: Devices whose update is being built at once after a change (each is a few queries).
BUILD_AT_ONCE = 16


class Pushers:
    """One pusher task per device with a change to take. The event watcher only asks (it dispatches every
    event in order and must not wait on a device), and a device that is slow to take its update — up to
    its channel's stall limit — delays only itself. Changes that come while a device's push runs make one
    more push of the newest state, not one each. The connection's own ``push_lock`` keeps a change's parts
    from interleaving with the connect push's (a reconnected device has a new lock: a push stuck on its
    dead connection never delays it)."""

    def __init__(self, server: HelplineServer, cache: snapshot.SnapshotCache) -> None:
        self._server = server
        self._cache = cache
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._building = asyncio.Semaphore(BUILD_AT_ONCE)
        self._stopped = False

    def request(self, device_id: str) -> None:
        if self._stopped:
            return
        task = self._tasks.get(device_id)
        if task is not None and not task.done():
            self._again.add(device_id)
            return
        self._tasks[device_id] = asyncio.create_task(self._push(device_id), name=f"authority push {device_id}")

    async def _push(self, device_id: str) -> None:
        try:
            while True:
                self._again.discard(device_id)
                conn = self._server.connections.get(device_id)
                if conn is None or not speaks_authority(conn):
                    return
                try:
                    async with conn.push_lock:  # as send_to: built and sent in the order of the lock
                        async with self._building:
                            shared = await self._cache.get(self._server.db)
                            update = update_from(shared, conn.device_id, conn.group)
                        await send_update(conn, update)
                except ConnectionError as exc:
                    # Gone, stalled and cut off, or its channel closed or not past its handshake yet (ChannelNotOpen):
                    # it gets everything with the first update of its (next) connection.
                    log.warning("could not push the authority", extra={"device_id": device_id, "error": str(exc)})
                except Exception:
                    log.exception("could not push the authority", extra={"device_id": device_id})
                if device_id not in self._again:
                    return
        finally:
            if self._tasks.get(device_id) is asyncio.current_task():
                del self._tasks[device_id]

    async def run(self) -> None:
        """Lives with the server: stopping it cancels the pushes still running, and no new one starts."""
        try:
            await asyncio.Event().wait()
        finally:
            self._stopped = True
            for task in list(self._tasks.values()):
                task.cancel()


def setup(server: HelplineServer) -> None:
    cache = snapshot.SnapshotCache()
    pushers = Pushers(server, cache)

    async def on_ready(conn: AgentConnection) -> None:
        await send_to(server, conn, conn.push_lock, cache)

    async def on_changed(_subject: str, _payload: dict[str, Any]) -> None:
        cache.invalidate()  # before any push of this change is built
        for device_id in server.connections.device_ids():
            pushers.request(device_id)

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
    server.background.append(pushers.run)


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
