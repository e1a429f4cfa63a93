"""The signing side of the org trust root: keys, certificates, approvals, revocations, rotation, backup.

Runs on an administrator's workstation or an approver's machine, never on the server. Pure
computation on bytes and structs; reading and writing files is the CLI's job
(:mod:`helpline.commands.trust`). Private keys leave this module only encrypted with a
passphrase (``BestAvailableEncryption``) or as SLIP-39 shares (``shamir-mnemonic``).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.authority import (
    Approval,
    CredentialCert,
    CredentialKind,
    Ed25519Key,
    Ed25519Signature,
    PasskeyKey,
    PublicKey,
    RevocationList,
    RootInfo,
    RootRotation,
    RootRotationBody,
    SignedCert,
    SignedDocument,
    SignedKind,
    SignedRevocationList,
    TechnicianProof,
    TechnicianStatement,
    b64encode,
    canonical_bytes,
    ed25519_message,
    fingerprint,
)

from .authority import parse_cose_key
from .errors import CertError

#: Passphrases shorter than this are refused for keys at rest.
MIN_PASSPHRASE = 12


class CeremonyError(CertError):
    """A ceremony step cannot be done (wrong passphrase, bad key file, bad shares); the message says why."""


# --- keys -------------------------------------------------------------------------------------------


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def encrypt_key(key: Ed25519PrivateKey, passphrase: bytes) -> bytes:
    """PKCS#8 PEM encrypted with the best scheme ``cryptography`` offers."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise CeremonyError(f"the passphrase must be at least {MIN_PASSPHRASE} characters")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(passphrase))


def decrypt_key(pem: bytes, passphrase: bytes) -> Ed25519PrivateKey:
    """The Ed25519 key in an encrypted PEM; a wrong passphrase or another key type is a CeremonyError."""
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError) as exc:
        raise CeremonyError("cannot decrypt the key: wrong passphrase, or not an encrypted private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise CeremonyError("the key is not an Ed25519 key")
    return key


def public_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key_pem(pem: bytes) -> Ed25519Key:
    """An Ed25519 public key (SubjectPublicKeyInfo PEM) as it goes into a certificate."""
    try:
        public = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise CeremonyError("not a PEM public key") from exc
    if not isinstance(public, Ed25519PublicKey):
        raise CeremonyError("the public key is not an Ed25519 key")
    return Ed25519Key(raw=b64encode(raw_public(public)))


def passkey_key(cose_key: bytes, *, rp_id: str, webauthn_id: str, origins: Sequence[str]) -> PasskeyKey:
    """A passkey's COSE public key (CBOR bytes, as registration gave it) checked by python-fido2."""
    if parse_cose_key(cose_key) is None:
        raise CeremonyError("not a COSE public key of a supported algorithm (ES256 or EdDSA)")
    try:
        return PasskeyKey(cose_key=b64encode(cose_key), rp_id=rp_id, webauthn_id=webauthn_id, origins=list(origins))
    except ValueError as exc:
        raise CeremonyError(str(exc)) from exc


def new_credential_id() -> str:
    return secrets.token_urlsafe(12)


# --- root -----------------------------------------------------------------------------------------


def new_root(key: Ed25519PrivateKey, *, name: str, now: float) -> RootInfo:
    raw = raw_public(key)
    return RootInfo(public_key=b64encode(raw), fingerprint=fingerprint(raw), name=name, created_at=now)


def check_root_key(key: Ed25519PrivateKey, root: RootInfo) -> None:
    """Refuse a key that is not ``root``'s (a wrong file, or shares of another root)."""
    if fingerprint(raw_public(key)) != root.fingerprint:
        raise CeremonyError(f"this key is not the key of root {root.fingerprint}")


def rotate_root(old_key: Ed25519PrivateKey, old_root: RootInfo, new_root_info: RootInfo, *, now: float,
                reason: str = "") -> RootRotation:
    """The old root's signed hand-over to the new one."""
    check_root_key(old_key, old_root)
    body = canonical_bytes(RootRotationBody(previous_fingerprint=old_root.fingerprint, new_root=new_root_info,
                                            issued_at=now, reason=reason))
    return RootRotation(body=body.decode(), signature=_sign(old_key, "root_rotation", body))


def _sign(key: Ed25519PrivateKey, kind: SignedKind, body: bytes) -> str:
    return b64encode(key.sign(ed25519_message(kind, body)))


# --- certificates ---------------------------------------------------------------------------------


def issue_cert(root_key: Ed25519PrivateKey, root: RootInfo, *, kind: CredentialKind, holder: str,
               public_key: PublicKey, not_before: float, not_after: float, now: float,
               credential_id: str | None = None) -> SignedCert:
    """The root's certificate for one credential."""
    check_root_key(root_key, root)
    try:
        cert = CredentialCert(credential_id=credential_id or new_credential_id(), kind=kind, holder=holder,
                              public_key=public_key, root_fingerprint=root.fingerprint, not_before=not_before,
                              not_after=not_after, issued_at=now)
    except ValueError as exc:
        raise CeremonyError(str(exc)) from exc
    return sign_cert(root_key, cert)


def sign_cert(root_key: Ed25519PrivateKey, cert: CredentialCert) -> SignedCert:
    body = canonical_bytes(cert)
    return SignedCert(body=body.decode(), signature=_sign(root_key, "credential", body))


# --- signatures by credentials ----------------------------------------------------------------------


def ed25519_approval(key: Ed25519PrivateKey, credential_id: str, kind: SignedKind, body: bytes) -> Approval:
    return Approval(credential_id=credential_id, signature=Ed25519Signature(signature=_sign(key, kind, body)))


def approve(document: SignedDocument, *, credential_id: str, key: Ed25519PrivateKey) -> SignedDocument:
    """``document`` with one more Ed25519 approval (replacing an earlier one by the same credential)."""
    approval = ed25519_approval(key, credential_id, document.kind, document.body.encode())
    others = [a for a in document.approvals if a.credential_id != credential_id]
    return SignedDocument(kind=document.kind, body=document.body, approvals=[*others, approval])


def sign_revocation_list(key: Ed25519PrivateKey, credential_id: str,
                         revocations: RevocationList) -> SignedRevocationList:
    body = canonical_bytes(revocations)
    return SignedRevocationList(body=body.decode(),
                                approval=ed25519_approval(key, credential_id, "revocation_list", body))


def sign_technician_statement(key: Ed25519PrivateKey, credential_id: str,
                              statement: TechnicianStatement) -> TechnicianProof:
    body = canonical_bytes(statement)
    return TechnicianProof(body=body.decode(), approval=ed25519_approval(key, credential_id, "technician_proof", body))


# --- M-of-N backup of the root key (SLIP-39) ----------------------------------------------------------


def split_key(key: Ed25519PrivateKey, *, shares: int, threshold: int) -> list[str]:
    """SLIP-39 mnemonics of the raw root key: any ``threshold`` of the ``shares`` recover it."""
    import shamir_mnemonic  # the [trust] extra: only administrators' workstations need it

    if not 1 <= threshold <= shares <= 16 or (threshold == 1 and shares > 1):
        raise CeremonyError("need 1 <= threshold <= shares <= 16 (a threshold of 1 is only for a single share)")
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    groups = shamir_mnemonic.generate_mnemonics(1, [(threshold, shares)], raw)
    return list(groups[0])


def recover_key(mnemonics: Sequence[str]) -> Ed25519PrivateKey:
    """The root key from enough SLIP-39 shares; too few, mixed or mistyped shares are a CeremonyError."""
    import shamir_mnemonic

    try:
        raw = shamir_mnemonic.combine_mnemonics([" ".join(m.split()) for m in mnemonics])
    except (shamir_mnemonic.MnemonicError, ValueError) as exc:
        raise CeremonyError(f"cannot recover the key from these shares: {exc}") from exc
    if len(raw) != 32:
        raise CeremonyError("the shares do not hold an Ed25519 key")
    return Ed25519PrivateKey.from_private_bytes(raw)


def webauthn_id_of(data: bytes) -> str:
    """A WebAuthn credential id as browsers write it (base64url without padding)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
