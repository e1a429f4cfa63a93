"""What a node and the signer say to each other: one request, one answer (JSON over TLS 1.3).

A node asks for an intermediate for a key it just generated (a CSR) and proves who it is with
its **current intermediate's key** (a signature over the CSR) or, for a new node or one whose
intermediate expired, with a one-time **enrolment token**. Replaying a request gains nothing:
the answer certifies the key in the CSR, which only the node holds.
"""

from __future__ import annotations

import base64
import binascii

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

#: Largest request body the signer reads (a CSR, an intermediate and a signature are ~2 KiB).
MAX_REQUEST_BYTES = 32 * 1024
#: Largest answer a node reads (two certificates).
MAX_RESPONSE_BYTES = 32 * 1024
PATH = "/v1/intermediate"
_CONTEXT = b"helpline node intermediate renewal\x00"


class IntermediateRequest(msgspec.Struct, forbid_unknown_fields=True):
    node: str
    csr: str
    #: The node's current intermediate (PEM) and its key's signature over the CSR (base64), or …
    current: str | None = None
    signature: str | None = None
    #: … the one-time enrolment token ``helpline certs signer add-node`` printed.
    token: str | None = None


class IntermediateAnswer(msgspec.Struct, forbid_unknown_fields=True):
    #: The node's new intermediate, then the delegation (PEM).
    chain: str


def _message(csr_pem: str) -> bytes:
    return _CONTEXT + x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER)


def sign_proof(key: ec.EllipticCurvePrivateKey, csr_pem: str) -> str:
    """The current intermediate key's signature over the CSR, base64."""
    return base64.b64encode(key.sign(_message(csr_pem), ec.ECDSA(hashes.SHA256()))).decode()


def proof_holds(cert: x509.Certificate, csr_pem: str, signature_b64: str) -> bool:
    """True if ``signature_b64`` is ``cert``'s key's signature over ``csr_pem`` (never raises on peer input)."""
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), _message(csr_pem), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True
