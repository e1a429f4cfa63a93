"""The authority as the API shows it: the root chain, certificates, revocations, documents and approvals.

Documents are shown decoded, with the SHA-256 of the exact signed text and their approvals. The
server also says whether each approval verifies *from its own point of view* (the root it relays,
the certificates and revocation list it holds) — a convenience for the console, never a decision:
the devices verify against the root they were installed with. ``helpline approve`` shows the
document from its own decoding, not from this view.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from certs.authority import cert_problem, find_cert, verify_chain, verify_revocation_list, verify_signature
from certs.legacy import decode_handover
from protocol.authority import (
    SIGNER_KINDS,
    AuthorityPolicy,
    Body,
    RevocationList,
    RootInfo,
    SignedCert,
    SignedDocument,
    SignedRevocationList,
    decode_canonical,
    required_approvals,
)
from protocol.legacy import LegacyHandover

from ..store import Row
from . import repository

Json = dict[str, Any]


def root_view(root: RootInfo) -> Json:
    return {"fingerprint": root.fingerprint, "name": root.name, "created_at": root.created_at}


def handover_view(handover: LegacyHandover | None) -> Json | None:
    if handover is None:
        return None
    body = decode_handover(handover)
    if isinstance(body, str):
        return {"problem": body}
    return {"root_fingerprint": body.root.fingerprint, "legacy_key_sha256": body.legacy_key_sha256,
            "issued_at": body.issued_at}


def chain_view(chain: repository.Chain) -> Json:
    return {"root": root_view(chain.current) if chain.current else None,
            "chain": [root_view(r) for r in chain.roots], "rotations": len(chain.rotations)}


def revocations_view(signed: SignedRevocationList | None, now: float) -> Json | None:
    if signed is None:
        return None
    listed = decode_canonical(signed.body, RevocationList)
    return {"sequence": listed.sequence, "issued_at": listed.issued_at, "expires_at": listed.expires_at,
            "stale": now >= listed.expires_at, "credentials": listed.credentials, "documents": listed.documents,
            "signed_by": signed.approval.credential_id}


def cert_view(signed: SignedCert, root: RootInfo | None) -> Json:
    from protocol.authority import CredentialCert, key_fingerprint

    cert = decode_canonical(signed.body, CredentialCert)
    verified = root is not None and not isinstance(find_cert(cert.credential_id, [signed], root=root), str)
    return {"credential_id": cert.credential_id, "kind": cert.kind, "holder": cert.holder,
            "key_fingerprint": key_fingerprint(cert.public_key), "not_before": cert.not_before,
            "not_after": cert.not_after, "signed_by_relayed_root": verified}


def _approval_view(document: SignedDocument, index: int, root: RootInfo | None, certs: list[SignedCert],
                   revoked: frozenset[str], now: float) -> Json:
    approval = document.approvals[index]
    view: Json = {"credential_id": approval.credential_id, "type": approval.signature.__struct_config__.tag,
                  "holder": None, "valid": False}
    if root is None:
        return view | {"problem": "the server relays no root"}
    cert = find_cert(approval.credential_id, certs, root=root)
    if isinstance(cert, str):
        return view | {"problem": cert}
    problem = cert_problem(cert, now=now, revoked=revoked, allowed_kinds=SIGNER_KINDS.get(document.kind, frozenset()),
                           purpose=f"a {document.kind}")
    if problem is None:
        problem = verify_signature(document.kind, document.body.encode(), approval.signature, cert,
                                   require_user_verification=True).problem  # type: ignore[arg-type]
    return view | {"holder": cert.holder, "valid": problem is None, "problem": problem or ""}


def document_view(row: Row, *, root: RootInfo | None, certs: list[SignedCert],
                  revocations: SignedRevocationList | None, now: float | None = None) -> Json:
    """A stored document: decoded body, its hash, approvals (each checked as the server sees it) and a status."""
    now = time.time() if now is None else now
    document = repository.signed_of(row)
    body: Body = repository.decode(document)
    policy = AuthorityPolicy()
    status = row["status"]
    check = "withdrawn"
    if status != "withdrawn":
        if root is None:
            check = "the server relays no root"
        else:
            verdict = verify_chain(document, pinned_root_fingerprint=root.fingerprint, root=root, certs=certs,
                                   revocations=revocations, now=now, policy=policy)
            check = verdict.reason
            status = "approved" if verdict.allowed else "pending"
    revoked = verify_revocation_list(revocations, root=root, certs=certs, now=now, policy=policy).credentials \
        if root is not None else frozenset()
    devices, groups = repository.listed(row)
    return {
        "document_id": row["document_id"], "kind": row["kind"], "status": status,
        "body": msgspec.to_builtins(body), "body_sha256": row["body_sha256"],
        "approvals": [_approval_view(document, i, root, certs, revoked, now) for i in range(len(document.approvals))],
        "approvals_needed": required_approvals(row["kind"], body, policy),
        "check": check, "devices": devices, "groups": groups,
        "created_by": row["created_by"], "created_at": row["created_at"], "updated_at": row["updated_at"],
        "withdrawn_at": row["withdrawn_at"], "withdrawn_by": row["withdrawn_by"],
        "document": msgspec.to_builtins(document),
    }
