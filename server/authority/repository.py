"""Every SQL statement of the authority the server relays: root chain, certificates, revocation lists,
signed documents, device reports.

The server stores what administrators and approvers made elsewhere and never signs anything; the
few checks made here (a rotation really hands over from the root relayed now, a body is canonical)
only keep useless uploads out — the devices check everything again. Every change is audited and
published as an ``authority.changed`` event in its transaction, so every node pushes it to its agents.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from certs.authority import verify_rotation
from certs.legacy import decode_handover, verify_handover
from protocol.authority import (
    Approval,
    AuthorityPolicy,
    Body,
    CredentialCert,
    NotCanonical,
    RevocationList,
    RootInfo,
    RootRotation,
    RootRotationBody,
    SignedCert,
    SignedDocument,
    SignedRevocationList,
    body_sha256,
    decode_body,
    decode_canonical,
    document_id,
)
from protocol.legacy import LegacyHandover

from .. import audit, events
from ..errors import ApiError
from ..store import Database, Row, Transaction

AUTHORITY_CHANGED = "authority.changed"
DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, NotCanonical)
#: At most this many approvals on one document (SignedDocument's own limit).
MAX_APPROVALS = 16


@dataclass(frozen=True)
class Chain:
    """The root chain relayed now: its origin and the rotations after it (oldest first)."""

    number: int
    origin: RootInfo | None
    rotations: list[RootRotation]
    #: Every root of the chain, origin first; the last is the one in force.
    roots: list[RootInfo]

    @property
    def current(self) -> RootInfo | None:
        return self.roots[-1] if self.roots else None


async def chain(db: Database | Transaction) -> Chain:
    rows = await db.fetchall("SELECT * FROM authority_roots WHERE chain = (SELECT MAX(chain) FROM authority_roots)"
                             " ORDER BY seq")
    if not rows:
        return Chain(0, None, [], [])
    roots = [msgspec.json.decode(r["root"], type=RootInfo) for r in rows]
    rotations = [msgspec.json.decode(r["rotation"], type=RootRotation) for r in rows[1:]]
    return Chain(int(rows[0]["chain"]), roots[0], rotations, roots)


async def _changed(tx: Transaction, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
    await audit.append_in(tx, actor, action, target, details)
    await events.publish_in(tx, AUTHORITY_CHANGED, target, {"action": action})


async def put_root(tx: Transaction, root: RootInfo, *, replace: bool, actor: str) -> str:
    """Relay ``root``: the first one, one already in the chain (nothing to do), or — only with ``replace`` —
    a new chain. Returns what happened."""
    current = await chain(tx)
    if any(r.fingerprint == root.fingerprint for r in current.roots):
        return "known"
    if current.origin is not None and not replace:
        raise ApiError(409, "root_exists", (
            f"the server relays root {current.roots[-1].fingerprint}; another root reaches agents only through a "
            "rotation signed by it (upload rotation.json from 'helpline trust rotate'). replace_root=true relays it "
            "anyway, but agents installed with the old root refuse it"))
    await tx.execute("INSERT INTO authority_roots (chain, fingerprint, root, rotation, uploaded_at, uploaded_by)"
                     " VALUES (?, ?, ?, NULL, ?, ?)",
                     (current.number + 1, root.fingerprint, msgspec.json.encode(root).decode(), time.time(), actor))
    action = "authority.root_replace" if current.origin is not None else "authority.root_upload"
    await _changed(tx, actor, action, root.fingerprint,
                   {"name": root.name, "previous": current.current.fingerprint if current.current else None})
    return "replaced" if current.origin is not None else "added"


async def put_rotation(tx: Transaction, rotation: RootRotation, *, actor: str, now: float) -> str:
    """Append a rotation signed by the root in force (checked here only to keep useless uploads out)."""
    current = await chain(tx)
    root = current.current
    if root is None:
        raise ApiError(409, "no_root", "upload the org root (root.json) before its rotations")
    try:
        body = decode_canonical(rotation.body, RootRotationBody)
    except DECODE_ERRORS as exc:
        raise ApiError.invalid(f"the rotation is invalid: {exc}") from exc
    if any(r.fingerprint == body.new_root.fingerprint for r in current.roots):
        return "known"
    verdict = verify_rotation(rotation, pinned_root_fingerprint=root.fingerprint, root=root, now=now,
                              policy=AuthorityPolicy())
    if not verdict.allowed:
        raise ApiError(409, "rotation_refused", f"this rotation does not hand over from the root relayed now: "
                                                f"{verdict.reason}")
    await tx.execute("INSERT INTO authority_roots (chain, fingerprint, root, rotation, uploaded_at, uploaded_by)"
                     " VALUES (?, ?, ?, ?, ?, ?)",
                     (current.number, body.new_root.fingerprint, msgspec.json.encode(body.new_root).decode(),
                      msgspec.json.encode(rotation).decode(), time.time(), actor))
    await _changed(tx, actor, "authority.root_rotate", body.new_root.fingerprint,
                   {"previous": root.fingerprint, "reason": body.reason})
    return "added"


async def put_cert(tx: Transaction, signed: SignedCert, *, actor: str) -> tuple[CredentialCert, bool]:
    """Store a certificate (once); returns it and whether it was new."""
    try:
        cert = decode_canonical(signed.body, CredentialCert)
    except DECODE_ERRORS as exc:
        raise ApiError.invalid(f"a certificate is invalid: {exc}") from exc
    digest = body_sha256(signed.body)
    if await tx.fetchone("SELECT 1 AS x FROM authority_certs WHERE body_sha256 = ?", (digest,)):
        return cert, False
    await tx.execute("INSERT INTO authority_certs (body_sha256, credential_id, kind, holder, not_after, cert,"
                     " uploaded_at, uploaded_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (digest, cert.credential_id, cert.kind, cert.holder, cert.not_after,
                      msgspec.json.encode(signed).decode(), time.time(), actor))
    await _changed(tx, actor, "authority.cert_upload", cert.credential_id,
                   {"kind": cert.kind, "holder": cert.holder, "not_after": cert.not_after})
    return cert, True


async def put_revocations(tx: Transaction, signed: SignedRevocationList, *, actor: str) -> tuple[RevocationList, bool]:
    try:
        listed = decode_canonical(signed.body, RevocationList)
    except DECODE_ERRORS as exc:
        raise ApiError.invalid(f"the revocation list is invalid: {exc}") from exc
    digest = body_sha256(signed.body)
    if await tx.fetchone("SELECT 1 AS x FROM authority_revocations WHERE body_sha256 = ?", (digest,)):
        return listed, False
    await tx.execute("INSERT INTO authority_revocations (body_sha256, sequence, issued_at, expires_at, list,"
                     " uploaded_at, uploaded_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (digest, listed.sequence, listed.issued_at, listed.expires_at,
                      msgspec.json.encode(signed).decode(), time.time(), actor))
    await _changed(tx, actor, "authority.revocations_upload", str(listed.sequence),
                   {"expires_at": listed.expires_at, "credentials": listed.credentials[:64],
                    "documents": listed.documents[:64]})
    return listed, True


async def put_handover(tx: Transaction, handover: LegacyHandover, *, actor: str) -> str:
    """Relay the one-time hand-over from the old grant key (``helpline trust adopt``) to agents enrolled under it.

    Checked here only to keep useless uploads out (it verifies with the key it names, and names a root
    this server relays); each agent checks it against its own grant.pub, once."""
    body = decode_handover(handover)
    if isinstance(body, str):
        raise ApiError.invalid(body)
    root = verify_handover(handover)
    if isinstance(root, str):
        raise ApiError(409, "handover_refused", root)
    current = await chain(tx)
    if all(r.fingerprint != root.fingerprint for r in current.roots):
        raise ApiError(409, "handover_refused", f"the hand-over names root {root.fingerprint}, which this server does "
                                                "not relay; publish root.json first (or with it)")
    digest = body_sha256(handover.body)
    if await tx.fetchone("SELECT 1 AS x FROM authority_handovers WHERE body_sha256 = ?", (digest,)):
        return "known"
    await tx.execute("INSERT INTO authority_handovers (body_sha256, legacy_key_sha256, root_fingerprint, handover,"
                     " uploaded_at, uploaded_by) VALUES (?, ?, ?, ?, ?, ?)",
                     (digest, body.legacy_key_sha256, root.fingerprint, msgspec.json.encode(handover).decode(),
                      time.time(), actor))
    await _changed(tx, actor, "authority.handover_upload", root.fingerprint,
                   {"legacy_key_sha256": body.legacy_key_sha256, "issued_at": body.issued_at})
    return "added"


async def latest_handover(db: Database | Transaction) -> LegacyHandover | None:
    """The newest hand-over naming a root of the chain relayed now (one for a root relayed no more is not sent)."""
    roots = sorted({r.fingerprint for r in (await chain(db)).roots})
    if not roots:
        return None
    marks = ", ".join("?" for _ in roots)
    row = await db.fetchone(f"SELECT handover FROM authority_handovers WHERE root_fingerprint IN ({marks})"  # noqa: S608
                            " ORDER BY uploaded_at DESC, body_sha256 LIMIT 1", tuple(roots))
    return None if row is None else msgspec.json.decode(row["handover"], type=LegacyHandover)


async def certs(db: Database | Transaction) -> list[SignedCert]:
    rows = await db.fetchall("SELECT cert FROM authority_certs ORDER BY uploaded_at, body_sha256")
    return [msgspec.json.decode(r["cert"], type=SignedCert) for r in rows]


async def latest_revocations(db: Database | Transaction) -> SignedRevocationList | None:
    row = await db.fetchone("SELECT list FROM authority_revocations ORDER BY sequence DESC, issued_at DESC LIMIT 1")
    return None if row is None else msgspec.json.decode(row["list"], type=SignedRevocationList)


# --- documents ------------------------------------------------------------------------------------


def decode(document: SignedDocument) -> Body:
    try:
        return decode_body(document.kind, document.body)
    except DECODE_ERRORS as exc:
        raise ApiError.invalid(f"the document's body is invalid: {exc}") from exc


def decode_or_none(document: SignedDocument) -> Body | None:
    """The body of a stored document, or None when it does not decode (the device refuses it anyway)."""
    try:
        return decode_body(document.kind, document.body)
    except DECODE_ERRORS:
        return None


def scope_of(body: Body) -> tuple[list[str], list[str]]:
    """The devices and groups a body names (none for releases and approver sets: they concern every device)."""
    return list(getattr(body, "devices", [])), list(getattr(body, "groups", []))


async def create_document(db: Database, document: SignedDocument, *, actor: str) -> Row:
    body = decode(document)
    doc_id = document_id(body)
    devices, groups = scope_of(body)
    now = time.time()
    async with db.transaction() as tx:
        if await get_document(tx, doc_id) is not None:
            raise ApiError(409, "exists", f"a document {doc_id} exists; give the new one another id")
        await tx.execute(
            "INSERT INTO authority_documents (document_id, kind, body, body_sha256, approvals, devices, groups, status,"
            " created_at, created_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?)",
            (doc_id, document.kind, document.body, body_sha256(document.body),
             msgspec.json.encode(document.approvals).decode(), json.dumps(devices), json.dumps(groups), now, actor,
             now))
        await _changed(tx, actor, "authority.document_create", doc_id,
                       {"kind": document.kind, "sha256": body_sha256(document.body),
                        "approvals": [a.credential_id for a in document.approvals]})
    row = await get_document(db, doc_id)
    assert row is not None
    return row


async def add_approval(db: Database, doc_id: str, approval: Approval, *, actor: str) -> Row:
    """Append ``approval`` (replacing an earlier one by the same credential)."""
    async with db.transaction() as tx:
        row = await get_document(tx, doc_id)
        if row is None:
            raise ApiError.not_found("document")
        if row["status"] != "open":
            raise ApiError(409, "withdrawn", f"document {doc_id} was withdrawn")
        approvals = [a for a in approvals_of(row) if a.credential_id != approval.credential_id]
        if len(approvals) >= MAX_APPROVALS:
            raise ApiError(409, "too_many", f"a document carries at most {MAX_APPROVALS} approvals")
        approvals.append(approval)
        changed = await tx.execute(
            "UPDATE authority_documents SET approvals = ?, updated_at = ? WHERE document_id = ? AND approvals = ?",
            (msgspec.json.encode(approvals).decode(), time.time(), doc_id, row["approvals"]))
        if changed != 1:
            raise ApiError(409, "conflict", "the document changed meanwhile; try again")
        await _changed(tx, actor, "authority.document_approve", doc_id,
                       {"credential_id": approval.credential_id, "sha256": row["body_sha256"]})
    fresh = await get_document(db, doc_id)
    assert fresh is not None
    return fresh


async def withdraw(db: Database, doc_id: str, *, actor: str) -> Row:
    async with db.transaction() as tx:
        if await tx.execute("UPDATE authority_documents SET status = 'withdrawn', withdrawn_at = ?, withdrawn_by = ?,"
                            " updated_at = ? WHERE document_id = ? AND status = 'open'",
                            (time.time(), actor, time.time(), doc_id)) == 1:
            await _changed(tx, actor, "authority.document_withdraw", doc_id, {})
    row = await get_document(db, doc_id)
    if row is None:
        raise ApiError.not_found("document")
    return row


async def get_document(db: Database | Transaction, doc_id: str) -> Row | None:
    if len(doc_id) > 64:
        return None
    return await db.fetchone("SELECT * FROM authority_documents WHERE document_id = ?", (doc_id,))


async def list_documents(db: Database) -> list[Row]:
    return await db.fetchall("SELECT * FROM authority_documents ORDER BY created_at DESC LIMIT 1000")


def approvals_of(row: Row) -> list[Approval]:
    return msgspec.json.decode(row["approvals"], type=list[Approval])


def signed_of(row: Row) -> SignedDocument:
    return SignedDocument(kind=row["kind"], body=row["body"], approvals=approvals_of(row))


def listed(row: Row) -> tuple[list[str], list[str]]:
    devices: list[str] = json.loads(row["devices"])
    groups: list[str] = json.loads(row["groups"])
    return devices, groups


def concerns(row: Row, device_id: str, group: str) -> bool:
    devices, groups = listed(row)
    return (not devices and not groups) or device_id in devices or group in groups


# --- what devices report --------------------------------------------------------------------------


async def record_status(db: Database, device_id: str, report: dict[str, Any]) -> bool:
    """Store a device's ``authority.status``; True when it differs from its previous report."""
    previous = await db.fetchone("SELECT * FROM authority_device_status WHERE device_id = ?", (device_id,))
    values = (report["root_fingerprint"], int(report["unattended_ok"]), report["problem"],
              report["revocation_sequence"], json.dumps(report["accepted"]), json.dumps(report["refused"]))
    if previous is not None and (previous["root_fingerprint"], previous["unattended_ok"], previous["problem"],
                                 previous["revocation_sequence"], previous["accepted"],
                                 previous["refused"]) == values:
        return False
    await db.execute(
        "INSERT INTO authority_device_status (device_id, root_fingerprint, unattended_ok, problem, revocation_sequence,"
        " accepted, refused, reported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET"
        " root_fingerprint = excluded.root_fingerprint, unattended_ok = excluded.unattended_ok,"
        " problem = excluded.problem, revocation_sequence = excluded.revocation_sequence,"
        " accepted = excluded.accepted, refused = excluded.refused, reported_at = excluded.reported_at",
        (device_id, *values, time.time()))
    return True


async def device_status(db: Database, device_id: str) -> Row | None:
    return await db.fetchone("SELECT * FROM authority_device_status WHERE device_id = ?", (device_id,))
