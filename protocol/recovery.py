"""Recovery of an expired device certificate: the two requests and the bytes the device signs.

A device whose certificate ended while it was off cannot pass the agent listener's mutual TLS, so it
asks on the console port (server-authenticated TLS): first a fresh nonce for its device id, then a new
certificate for a new key, proving with the signature of its *current* key — the expired
certificate's — over :func:`proof_bytes`. The server (server/recovery.py) checks the chain, the key
against its registry, the grace period and the nonce; the agent side is agent/recovery.py.

Both ends build the signed bytes here, so they cannot drift: a fixed label (no signature made for
anything else verifies as a recovery proof), the nonce, the device id and the SHA-256 of the CSR's
exact text, one per line.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

import msgspec

from .limits import MAX_ID_LEN, MAX_TEXT

#: What a proof starts with; a new version of the proof gets a new label.
PROOF_LABEL = b"helpline-device-recovery-v1"
#: Nonces are 32 random bytes, hex.
NONCE_HEX_LEN = 64
#: The expired chain (leaf, intermediate, on a delegated node the delegation): three PEM certificates fit.
MAX_CHAIN_PEM = MAX_TEXT
#: A P-256 CSR in PEM is about 500 bytes.
MAX_CSR_PEM = 4 * 1024
#: A DER ECDSA P-256 signature is at most 72 bytes: 96 base64 characters.
MAX_SIGNATURE_B64 = 128
#: Whole request bodies (the JSON around the fields above).
MAX_NONCE_BODY = 1024
MAX_RECOVER_BODY = MAX_CHAIN_PEM + MAX_CSR_PEM + 2 * 1024

DeviceId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LEN, pattern=r"^[A-Za-z0-9._-]+$",
                                       description="The device id the expired certificate names.")]


class NonceRequest(msgspec.Struct, forbid_unknown_fields=True):
    device_id: DeviceId


class RecoverRequest(msgspec.Struct, forbid_unknown_fields=True):
    device_id: DeviceId
    nonce: Annotated[str, msgspec.Meta(min_length=NONCE_HEX_LEN, max_length=NONCE_HEX_LEN, pattern=r"^[0-9a-f]+$",
                                       description="The nonce from `POST /api/v1/enroll/recover/nonce`.")]
    chain: Annotated[str, msgspec.Meta(max_length=MAX_CHAIN_PEM,
                                       description="The expired certificate followed by its issuing chain (PEM).")]
    csr: Annotated[str, msgspec.Meta(max_length=MAX_CSR_PEM,
                                     description="PEM certificate signing request for a NEW key (ECDSA P-256).")]
    signature: Annotated[str, msgspec.Meta(max_length=MAX_SIGNATURE_B64,
                                           description="Base64 ECDSA-SHA256 signature of the expired "
                                                       "certificate's key over the proof bytes.")]


def proof_bytes(nonce: str, device_id: str, csr_pem: str) -> bytes:
    """What the expired certificate's key signs: label, nonce, device id, SHA-256 of the CSR text."""
    csr_digest = hashlib.sha256(csr_pem.encode()).hexdigest()
    return b"\n".join([PROOF_LABEL, nonce.encode(), device_id.encode(), csr_digest.encode()])
