"""Signing and checking the one-time hand-over from the old grant key to the org root.

The signing side runs once, in ``helpline trust adopt`` on an administrator's workstation, with the
``grant.key`` copied off the server; the checking side runs on agents enrolled before the org root
existed (:mod:`agent.authority.legacy`). See :mod:`protocol.legacy` for what is signed.
"""

from __future__ import annotations

import base64
import hashlib

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.authority import NotCanonical, RootInfo, b64decode, b64encode, decode_canonical
from protocol.legacy import LegacyHandover, LegacyHandoverBody, handover_message

from .errors import CertError

_encoder = msgspec.json.Encoder(order="sorted")


def load_legacy_private_key(pem: bytes) -> Ed25519PrivateKey:
    """The old ``pki/grant.key`` (unencrypted PEM, as ``helpline certs init`` wrote it)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise CertError("the old grant key is Ed25519; this is another kind of key")
    return key


def load_legacy_public_key(pem: bytes) -> bytes:
    """The raw 32 bytes of the old ``grant.pub`` an agent pinned at enrollment."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise CertError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise CertError("grant.pub is not an Ed25519 key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign_handover(key: Ed25519PrivateKey, root: RootInfo, *, now: float) -> LegacyHandover:
    """The old grant key names ``root`` as the one to pin from now on."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    body = LegacyHandoverBody(legacy_public_key=b64encode(raw), legacy_key_sha256=hashlib.sha256(raw).hexdigest(),
                              root=root, issued_at=now)
    text = _encoder.encode(body)
    return LegacyHandover(body=text.decode(), signature=b64encode(key.sign(handover_message(text))))


def decode_handover(handover: LegacyHandover) -> LegacyHandoverBody | str:
    """The statement's body (canonical), or why it is unusable."""
    try:
        return decode_canonical(handover.body, LegacyHandoverBody)
    except (msgspec.ValidationError, msgspec.DecodeError, NotCanonical) as exc:
        return f"the hand-over is malformed: {exc}"


def verify_handover(handover: LegacyHandover, *, legacy_public_key: bytes | None = None) -> RootInfo | str:
    """The root ``handover`` names, when its signature verifies — with the key it names, or, when
    ``legacy_public_key`` (raw bytes, the agent's grant.pub) is given, only with that key.
    Otherwise a reason (peer input never raises)."""
    body = decode_handover(handover)
    if isinstance(body, str):
        return body
    raw = base64.b64decode(body.legacy_public_key)
    if legacy_public_key is not None and raw != legacy_public_key:
        return (f"the hand-over is signed by grant key {body.legacy_key_sha256[:16]}…, not by the grant key this "
                f"device was enrolled with ({hashlib.sha256(legacy_public_key).hexdigest()[:16]}…)")
    signature = b64decode(handover.signature)
    if signature is None:
        return "the hand-over's signature is not base64"
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, handover_message(handover.body.encode()))
    except (InvalidSignature, ValueError):
        return "the hand-over's signature does not verify with the grant key it names"
    return body.root
