"""An org's authority for in-process tests: root, approvers, a technician, a revoker — and the unattended
session dance (request, the device's challenge, the technician's proof) through the real API.

The keys live in the test (as they would on the administrators' and the technician's machines); the
server only receives public halves, documents and proofs (``X-Test-User`` principals of
tests/test_session_helpers.py). The agent must be configured with :attr:`Org.root.fingerprint` as its pin.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs import ceremony
from protocol.authority import (
    Body,
    CredentialKind,
    DocumentKind,
    Ed25519Key,
    RevocationList,
    RootInfo,
    SignedCert,
    SignedDocument,
    SignedRevocationList,
    TaskAuthorization,
    TechnicianProof,
    TechnicianStatement,
    UnattendedGrant,
    b64encode,
    new_document,
)
from server.app import HelplineServer
from tests.harness import wait_until
from tests.test_session_helpers import api


@dataclass
class Org:
    root_key: Ed25519PrivateKey
    root: RootInfo
    certs: list[SignedCert] = field(default_factory=list)
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    sequence: int = 0

    def certify(self, label: str, kind: CredentialKind, holder: str) -> str:
        now = time.time()
        self.keys[label] = ceremony.generate_key()
        self.certs.append(ceremony.issue_cert(
            self.root_key, self.root, kind=kind, holder=holder, credential_id=f"{label}-credential",
            public_key=Ed25519Key(raw=b64encode(ceremony.raw_public(self.keys[label]))), not_before=now - 300,
            not_after=now + 30 * 86400, now=now))
        self.ids[label] = f"{label}-credential"
        return self.ids[label]

    def revocations(self, *, documents: tuple[str, ...] = (), hours: float = 23.0) -> SignedRevocationList:
        """The next revocation list (sequence + 1), signed by the revoker."""
        self.sequence += 1
        now = time.time()
        listed = RevocationList(sequence=self.sequence, issued_at=now - 60, expires_at=now + hours * 3600,
                                documents=list(documents))
        return ceremony.sign_revocation_list(self.keys["desk"], self.ids["desk"], listed)

    def grant(self, grant_id: str, *, signers: tuple[str, ...] = ("alice", "bob"), **fields: Any) -> SignedDocument:
        now = time.time()
        values: dict[str, Any] = dict(grant_id=grant_id, groups=["lab"], technician_names=["Dave"],
                                      actions=["view"], not_before=now - 60, not_after=now + 3600, issuer="Alice",
                                      issued_at=now)
        values.update(fields)
        document = new_document("grant", UnattendedGrant(**values))
        for signer in signers:
            document = ceremony.approve(document, credential_id=self.ids[signer], key=self.keys[signer])
        return document

    def sign(self, kind: DocumentKind, body: Body, signers: Sequence[str] = ("alice", "bob")) -> SignedDocument:
        """``body`` as a document of ``kind`` approved by ``signers`` (labels of certified keys)."""
        document = new_document(kind, body)
        for signer in signers:
            document = ceremony.approve(document, credential_id=self.ids[signer], key=self.keys[signer])
        return document

    def task(self, task_id: str, *, signers: tuple[str, ...] = ("alice", "bob"), script: str | None = None,
             **fields: Any) -> SignedDocument:
        """A TaskAuthorization for group lab, valid for an hour (a script's SHA-256 when ``script`` is given),
        approved by ``signers``."""
        import hashlib

        now = time.time()
        values: dict[str, Any] = dict(task_id=task_id, action="script" if script is not None else "clear_temp",
                                      groups=["lab"], not_before=now - 60, not_after=now + 3600, issuer="Alice",
                                      issued_at=now)
        if script is not None:
            values["script_sha256"] = hashlib.sha256(script.encode()).hexdigest()
            values["params"] = {"interpreter": "sh"}
        values.update(fields)
        document = new_document("task", TaskAuthorization(**values))
        for signer in signers:
            document = ceremony.approve(document, credential_id=self.ids[signer], key=self.keys[signer])
        return document

    def proof(self, challenge: dict[str, Any], technician: str = "dave") -> TechnicianProof:
        statement = TechnicianStatement(nonce=challenge["nonce"], device_id=challenge["device_id"],
                                        action=challenge["action"], document_id=challenge["document_id"],
                                        signed_at=time.time())
        return ceremony.sign_technician_statement(self.keys[technician], self.ids[technician], statement)


def make_org() -> Org:
    key = ceremony.generate_key()
    org = Org(key, ceremony.new_root(key, name="Test org", now=time.time() - 600))
    org.certify("alice", "approver", "Alice")
    org.certify("bob", "approver", "Bob")
    org.certify("dave", "technician", "Dave")
    org.certify("desk", "revoker", "Security desk")
    return org


async def publish(server: HelplineServer, org: Org, revocations: SignedRevocationList | None = None) -> None:
    """What ``helpline trust publish`` uploads: the root, the certificates, a revocation list."""
    body = {"root": msgspec.to_builtins(org.root), "certs": msgspec.to_builtins(org.certs),
            "revocations": msgspec.to_builtins(revocations or org.revocations())}
    status, answer = await api(server, "POST", "/api/v1/authority", "root", body)
    assert status == 200, answer


async def publish_revocations(server: HelplineServer, revocations: SignedRevocationList) -> None:
    status, answer = await api(server, "POST", "/api/v1/authority", "root",
                               {"revocations": msgspec.to_builtins(revocations)})
    assert status == 200, answer


async def submit(server: HelplineServer, document: SignedDocument) -> None:
    status, answer = await api(server, "POST", "/api/v1/documents", "root", msgspec.to_builtins(document))
    assert status == 201, answer


async def unattended_session(server: HelplineServer, org: Org, device_id: str, document_id: str, *,
                             user: str = "ann", mode: str = "view", technician: str = "dave") -> dict[str, Any]:
    """Request a session under ``document_id``, wait for the device's challenge, send ``technician``'s proof;
    returns the session as the proof route answered it."""
    status, body = await api(server, "POST", f"/api/v1/devices/{device_id}/sessions", user,
                             {"mode": mode, "document_id": document_id})
    assert status == 201, body
    session_id = body["session_id"]
    seen: list[dict[str, Any]] = []

    async def challenged() -> bool:
        _status, current = await api(server, "GET", f"/api/v1/sessions/{session_id}", user)
        seen[:] = [current]
        return current["challenge"] is not None or (current["state"] == "ended" and current["end_reason"] is not None)

    await wait_until(challenged, what="the device's challenge")
    if seen[0]["state"] == "ended":
        return seen[0]
    proof = org.proof(seen[0]["challenge"], technician)
    status, answer = await api(server, "POST", f"/api/v1/sessions/{session_id}/proof", user,
                               msgspec.to_builtins(proof))
    assert status == 200, answer
    return dict(answer)
