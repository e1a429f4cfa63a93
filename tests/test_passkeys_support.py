"""Helpers for the passkey tests (no tests here): a software passkey that answers WebAuthn JSON as a browser
does, and Chromium's virtual authenticator (CDP) for the console tests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fido2 import cbor
from fido2.cose import ES256
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import AttestationObject, AttestedCredentialData, AuthenticatorData, CollectedClientData
from playwright.async_api import CDPSession

from certs import ceremony
from certs.authority import verify_chain
from protocol.authority import (
    AuthorityPolicy,
    CredentialKind,
    Ed25519Key,
    PublicKey,
    RevocationList,
    RootInfo,
    SignedCert,
    SignedDocument,
    SignedRevocationList,
    Verdict,
    b64encode,
)
from server.app import HelplineServer
from tests.procs import helpline
from tests.test_accounts_support import Account, client, login

UP, UV, AT = AuthenticatorData.FLAG.UP, AuthenticatorData.FLAG.UV, AuthenticatorData.FLAG.AT


@dataclass
class SoftPasskey:
    """One passkey in software (P-256), answering ``navigator.credentials`` JSON built from fido2's data classes."""

    origin: str
    rp_id: str = "localhost"
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    raw_id: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    counter: int = 0

    @property
    def cose_bytes(self) -> bytes:
        return cbor.encode(ES256.from_cryptography_key(self.key.public_key()))  # type: ignore[no-untyped-call]

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.cose_bytes).hexdigest()

    def _rp_hash(self, rp_id: str | None) -> bytes:
        return hashlib.sha256((rp_id or self.rp_id).encode()).digest()

    def create(self, options: dict[str, Any], *, origin: str | None = None, rp_id: str | None = None,
               flags: AuthenticatorData.FLAG = UP | UV) -> dict[str, Any]:
        """RegistrationResponseJSON for ``options`` (PublicKeyCredentialCreationOptions JSON)."""
        self.counter += 1
        public = ES256.from_cryptography_key(self.key.public_key())  # type: ignore[no-untyped-call]
        attested = AttestedCredentialData.create(bytes(16), self.raw_id, public)
        auth = AuthenticatorData.create(self._rp_hash(rp_id), flags | AT, self.counter, attested)
        client = CollectedClientData.create(type="webauthn.create", challenge=websafe_decode(options["challenge"]),
                                            origin=origin or self.origin)
        attestation = AttestationObject.create("none", auth, {})
        return {"id": websafe_encode(self.raw_id), "rawId": websafe_encode(self.raw_id), "type": "public-key",
                "response": {"clientDataJSON": websafe_encode(bytes(client)),
                             "attestationObject": websafe_encode(bytes(attestation))},
                "clientExtensionResults": {}}

    def get(self, challenge: bytes, *, origin: str | None = None, rp_id: str | None = None,
            flags: AuthenticatorData.FLAG = UP | UV, counter: int | None = None,
            signer: ec.EllipticCurvePrivateKey | None = None) -> dict[str, Any]:
        """AuthenticationResponseJSON over ``challenge``."""
        self.counter = self.counter + 1 if counter is None else counter
        auth = AuthenticatorData.create(self._rp_hash(rp_id), flags, self.counter)
        client = CollectedClientData.create(type="webauthn.get", challenge=challenge, origin=origin or self.origin)
        signature = (signer or self.key).sign(bytes(auth) + client.hash, ec.ECDSA(hashes.SHA256()))
        return {"id": websafe_encode(self.raw_id), "rawId": websafe_encode(self.raw_id), "type": "public-key",
                "response": {"clientDataJSON": websafe_encode(bytes(client)),
                             "authenticatorData": websafe_encode(bytes(auth)),
                             "signature": websafe_encode(signature), "userHandle": None},
                "clientExtensionResults": {}}

    def answer(self, options: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """AuthenticationResponseJSON for ``options`` (PublicKeyCredentialRequestOptions JSON)."""
        return self.get(websafe_decode(options["challenge"]), **kwargs)


# --- Chromium's virtual authenticator ---------------------------------------------------------------


VIRTUAL_AUTHENTICATOR = {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                         "hasUserVerification": True, "isUserVerified": True, "automaticPresenceSimulation": True}


async def virtual_authenticator(cdp: CDPSession) -> str:
    """A platform authenticator with user verification in the page's browser (CDP WebAuthn domain); its id."""
    await cdp.send("WebAuthn.enable", {"enableUI": False})
    added = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": VIRTUAL_AUTHENTICATOR})
    return str(added["authenticatorId"])


async def credentials(cdp: CDPSession, authenticator_id: str) -> list[dict[str, Any]]:
    found = await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
    return list(found["credentials"])


# --- an org on the administrator's workstation -------------------------------------------------------


@dataclass
class Org:
    """A root, the certificates it issued, CLI keys by credential id and a fresh revocation list (in memory)."""

    root_key: Ed25519PrivateKey
    root: RootInfo
    revoker: Ed25519PrivateKey
    certs: list[SignedCert] = field(default_factory=list)
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    revocations: SignedRevocationList | None = None

    @classmethod
    def new(cls, *, now: float) -> Org:
        root_key = ceremony.generate_key()
        org = cls(root_key, ceremony.new_root(root_key, name="Test Org", now=now - 3600), ceremony.generate_key())
        org.certify("revoker-0001", "revoker", "Security desk", Ed25519Key(raw=b64encode(ceremony.raw_public(org.revoker))))
        org.revoke(now=now)
        return org

    def certify(self, credential_id: str, kind: CredentialKind, holder: str, public_key: PublicKey, *,
                now: float | None = None) -> SignedCert:
        now = time.time() if now is None else now
        signed = ceremony.issue_cert(self.root_key, self.root, kind=kind, holder=holder, public_key=public_key,
                                     not_before=now - 3600, not_after=now + 30 * 86400, now=now,
                                     credential_id=credential_id)
        self.certs.append(signed)
        return signed

    def cli_key(self, credential_id: str, kind: CredentialKind, holder: str) -> Ed25519PrivateKey:
        key = ceremony.generate_key()
        self.keys[credential_id] = key
        self.certify(credential_id, kind, holder, Ed25519Key(raw=b64encode(ceremony.raw_public(key))))
        return key

    def revoke(self, *, now: float, credentials: tuple[str, ...] = ()) -> None:
        listed = RevocationList(sequence=1, issued_at=now - 60, expires_at=now + 3600, credentials=list(credentials))
        self.revocations = ceremony.sign_revocation_list(self.revoker, "revoker-0001", listed)

    def check(self, document: SignedDocument, *, now: float, policy: AuthorityPolicy | None = None) -> Verdict:
        """What a device pinned to this root decides about ``document``."""
        return verify_chain(document, pinned_root_fingerprint=self.root.fingerprint, root=self.root, certs=self.certs,
                            revocations=self.revocations, now=now, policy=policy or AuthorityPolicy())


# --- the administrator's workstation, through the real CLI ----------------------------------------


PASSPHRASE = "correct horse battery staple"


async def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """One real ``helpline`` command, off the event loop."""
    return await asyncio.to_thread(helpline, *args, check=check)


class Workstation:
    """The administrator's offline workstation: a trust directory driven by the real `helpline trust` CLI."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.org = tmp, tmp / "org"
        (tmp / "pass.txt").write_text(PASSPHRASE + "\n")
        self.secret = ["--passphrase-file", str(tmp / "pass.txt")]

    async def init(self) -> None:
        await cli("trust", "init", "--out", str(self.org), *self.secret)

    async def keygen_and_certify(self, name: str, kind: str, credential_id: str) -> Path:
        """A CLI-held key, certified after comparing the fingerprint keygen printed for its holder."""
        key = self.tmp / f"{name}.key"
        printed = (await cli("trust", "keygen", "--out", str(key), *self.secret)).stdout
        await self.certify("--kind", kind, "--name", name, "--public-key", str(key) + ".pub", "--id", credential_id,
                           "--fingerprint", printed.split("sha256): ")[1].split()[0])
        return key

    async def certify(self, *args: str) -> None:
        await cli("trust", "certify", "--dir", str(self.org), "--days", "30", *args, *self.secret)

    async def revoke(self, revoker_key: Path, revoker_id: str, *, hours: float = 2) -> Path:
        """A fresh revocation list signed by the revoker (nothing revoked)."""
        out = self.tmp / "revocations.json"
        await cli("trust", "revoke", "--key", str(revoker_key), "--cert", str(self.cert(revoker_id)), "--hours",
                  str(hours), "--out", str(out), *self.secret)
        return out

    def cert(self, credential_id: str) -> Path:
        return self.org / "certs" / f"{credential_id}.json"

    def upload(self) -> dict[str, Any]:
        """What `helpline trust publish` sends: root, certificates, the revocation list."""
        return {"root": json.loads((self.org / "root.json").read_bytes()),
                "certs": [json.loads(p.read_bytes()) for p in sorted((self.org / "certs").glob("*.json"))],
                "revocations": json.loads((self.tmp / "revocations.json").read_bytes())}

    def root(self) -> RootInfo:
        return msgspec.json.decode((self.org / "root.json").read_bytes(), type=RootInfo)

    def device_check(self, document: SignedDocument) -> Verdict:
        """What a device pinned to this root decides."""
        root = self.root()
        certs = [msgspec.json.decode(p.read_bytes(), type=SignedCert) for p in sorted((self.org / "certs").glob("*.json"))]
        revocations = msgspec.json.decode((self.tmp / "revocations.json").read_bytes(), type=SignedRevocationList)
        return verify_chain(document, pinned_root_fingerprint=root.fingerprint, root=root, certs=certs,
                            revocations=revocations, now=time.time(), policy=AuthorityPolicy())


async def publish(server: HelplineServer, admin: Account, upload: dict[str, Any]) -> None:
    """What ``helpline trust publish`` does, as an administrator's API call."""
    async with client(server) as http:
        auth = await login(http, admin)
        async with http.post("/api/v1/authority", json=upload, headers={"X-CSRF-Token": auth.csrf}) as resp:
            assert resp.status == 200, await resp.text()
