"""Signing and verifying unattended-access grants (and signed scripts) with the org grant key.

The grant key is Ed25519 and separate from the TLS CA: it proves an administrator approved
an unattended authorization. Agents get the public key at enrollment/with the CA and verify
every grant themselves.
"""

from __future__ import annotations

import base64
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.grants import Grant, SignedGrant, canonical_bytes, parse_document

from .errors import CertError, GrantSignatureError

__all__ = ["GrantSignatureError", "sign_grant", "verify_grant"]


def load_grant_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise CertError(f"{path} is not an Ed25519 private key")
    return key


def load_grant_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise CertError("grant public key is not Ed25519")
    return key


def public_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign_bytes(key: Ed25519PrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data)).decode()


def verify_bytes(public_key: Ed25519PublicKey, data: bytes, signature_b64: str) -> None:
    try:
        public_key.verify(base64.b64decode(signature_b64, validate=True), data)
    except (InvalidSignature, ValueError) as exc:
        raise GrantSignatureError("signature does not verify with the org grant key") from exc


def sign_grant(key: Ed25519PrivateKey, grant: Grant) -> SignedGrant:
    document = canonical_bytes(grant)
    return SignedGrant(document=document.decode(), signature=sign_bytes(key, document))


def verify_grant(public_key: Ed25519PublicKey, signed: SignedGrant) -> Grant:
    """Check the signature over the exact document bytes, then parse it."""
    verify_bytes(public_key, signed.document.encode(), signed.signature)
    try:
        return parse_document(signed.document)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise GrantSignatureError(f"signed grant document is invalid: {exc}") from exc
