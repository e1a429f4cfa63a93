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
_BUS = b"\x00bus certificate\x00"


class IntermediateRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    node: str
    csr: str
    #: The node's current intermediate (PEM) and its key's signature over the CSR (base64), or …
    current: str | None = None
    signature: str | None = None
    #: … the one-time enrolment token ``helpline certs signer add-node`` printed.
    token: str | None = None
    #: A CSR for the node's existing bus key (certs/bus_renewal.py), sent only by a node joined with ``--bus``:
    #: older signers refuse unknown fields, so a node that does not ask never sends it.
    bus_csr: str | None = None


class IntermediateAnswer(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    #: The node's new intermediate, then the delegation (PEM).
    chain: str
    #: The node's bus certificate (PEM), only when the request had a ``bus_csr`` (older nodes refuse the field).
    bus_chain: str | None = None


def _message(csr_pem: str, bus_csr_pem: str | None = None) -> bytes:
    """What the proof signs: the CSR, and the bus CSR when there is one (so neither can be swapped for another)."""
    message = _CONTEXT + x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER)
    if bus_csr_pem is not None:
        message += _BUS + x509.load_pem_x509_csr(bus_csr_pem.encode()).public_bytes(serialization.Encoding.DER)
    return message


def sign_proof(key: ec.EllipticCurvePrivateKey, csr_pem: str, bus_csr_pem: str | None = None) -> str:
    """The current intermediate key's signature over the CSR (and the bus CSR, if any), base64."""
    return base64.b64encode(key.sign(_message(csr_pem, bus_csr_pem), ec.ECDSA(hashes.SHA256()))).decode()


def proof_holds(cert: x509.Certificate, csr_pem: str, signature_b64: str, bus_csr_pem: str | None = None) -> bool:
    """True if ``signature_b64`` is ``cert``'s key's signature over ``csr_pem`` (and ``bus_csr_pem``); never raises
    on peer input."""
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), _message(csr_pem, bus_csr_pem),
                   ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True
