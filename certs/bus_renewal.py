"""A node's bus certificate, renewed by the signer with its intermediate: no year-long credential on a node.

``helpline certs nats`` gives each node a clientAuth certificate of the bus CA (its NATS user). Kept
for a year on the node's disk, it would be what the intermediate no longer is: a credential that a
stolen disk keeps working for months. With the bus CA on the signer (``helpline certs signer bus-ca``,
its key encrypted with the signer's passphrase, as the delegation's) and the node's bus identity
bound on the allow-list (``helpline certs signer bus-node``: its NATS node id and its bus key's
SPKI SHA-256), a node that joined with ``--bus`` sends a CSR for its **existing** bus key with every
renewal (the proof signature covers it) and gets a certificate of the intermediate's lifetime.

The key stays the same on purpose: nats-server pins every node's key (``pinned_certs``), so a new
key would need the NATS host's config changed; the pin says *which* key may connect, the short
certificate *until when*. ``signer remove-node`` therefore also ends the node's bus access within one
lifetime, without touching the NATS host; re-keying stays ``helpline certs nats --node``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.errors import CertError, CertValidationError, RootKeyOnServerError
from certs.nats import BusCA, key_pin
from certs.pki import (
    as_utc,
    build_csr,
    csr_public_key,
    load_certificate,
    load_encrypted_private_key,
    load_private_key,
    pem_chain,
    write_encrypted_private_key,
)
from common.files import atomic_write


class BusRefused(CertError):
    """The signer will not certify this bus key for this node (the message says why)."""


# --- the signer's side ------------------------------------------------------------------------------


def bus_ca_files(signer_dir: Path) -> tuple[Path, Path]:
    """Where a signer keeps the bus CA: its certificate and its key (encrypted with the signer's passphrase)."""
    return Path(signer_dir) / "bus-ca.pem", Path(signer_dir) / "bus-ca.key"


def import_bus_ca(signer_dir: Path, bus_dir: Path, passphrase: bytes) -> x509.Certificate:
    """Copy the bus CA from a ``helpline certs nats`` directory into the signer's, its key encrypted."""
    from certs.nats import BusPaths

    ca = BusCA.load(BusPaths(Path(bus_dir)))
    pem, key = bus_ca_files(signer_dir)
    write_encrypted_private_key(key, ca.signing_key, passphrase)
    atomic_write(pem, pem_chain([ca.certificate]), 0o644)
    return ca.certificate


def load_bus_ca(signer_dir: Path, passphrase: bytes) -> BusCA | None:
    """The signer's bus CA, or None when it has none (it then renews intermediates only)."""
    pem, key = bus_ca_files(signer_dir)
    if not pem.exists() and not key.exists():
        return None
    private = load_encrypted_private_key(key, passphrase)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key}: not an EC key")
    root = Path(signer_dir) / "ca.pem"
    if root.exists() and load_certificate(root).public_key() == private.public_key():
        raise RootKeyOnServerError(f"{key} is the root's private key, not the bus CA's: move it offline")
    try:
        return BusCA(load_certificate(pem), private)
    except ValueError as exc:
        raise CertError(f"{pem} and {key} are not a pair: {exc}") from exc


def issue_bus(ca: BusCA | None, bus_node: str | None, bus_spki: str | None, csr_pem: str, *, now: datetime,
              lifetime: timedelta) -> x509.Certificate:
    """The node's bus certificate for the key in ``csr_pem``, or ``BusRefused``: the signer must hold the bus
    CA, the allow-list must name the node's bus id and key, and the CSR's key must be that key."""
    if ca is None:
        raise BusRefused("this signer holds no bus CA (helpline certs signer bus-ca)")
    if bus_node is None or bus_spki is None:
        raise BusRefused("the allow-list names no bus identity for this node (helpline certs signer bus-node)")
    key = csr_public_key(csr_pem.encode())
    if key_pin(key) != bus_spki:
        raise BusRefused("the bus CSR's key is not the one bound to this node on the allow-list")
    return ca.issue_node(key, bus_node, now=now, lifetime=lifetime)



# --- the node's side -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BusFiles:
    """The node's bus credential, as its server config names it (``nats_tls_ca/cert/key``)."""

    ca: Path
    cert: Path
    key: Path

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = load_private_key(self.key)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertError(f"{self.key}: not an EC key")
        return key

    def csr(self) -> str:
        """A CSR for the node's existing bus key (the signer certifies the same key again)."""
        return build_csr(self.private_key()).decode()

    def certificate(self) -> x509.Certificate:
        return load_certificate(self.cert)

    def not_after(self) -> datetime:
        return self.certificate().not_valid_after_utc


def check_bus_answer(files: BusFiles, pem: str | None, *, now: datetime) -> x509.Certificate:
    """The signer's bus certificate, checked before it replaces the node's: same key, same NATS user (subject),
    a clientAuth leaf of the bus CA the node trusts, valid now. Anything else would cut the node off the bus."""
    if not pem:
        raise CertValidationError("the signer renewed the intermediate but sent no bus certificate "
                                  "(does it hold the bus CA, and is the node's bus identity bound?)")
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise CertValidationError(f"the signer's bus certificate is malformed: {exc}") from exc
    if len(certs) != 1:
        raise CertValidationError("the signer's bus answer is not one certificate")
    cert, current = certs[0], load_certificate(files.cert)
    if cert.public_key() != files.private_key().public_key():
        raise CertValidationError("the signer's bus certificate does not certify this node's bus key")
    if cert.subject != current.subject:
        raise CertValidationError(f"the signer's bus certificate names {cert.subject.rfc4514_string()}, "
                                  f"not this node's NATS user {current.subject.rfc4514_string()}")
    now = as_utc(now)
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise CertValidationError("the signer's bus certificate is not valid now")
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        cert.verify_directly_issued_by(load_certificate(files.ca))
    except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature) as exc:
        raise CertValidationError("the signer's bus certificate is not a leaf of the bus CA in nats_tls_ca") from exc
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise CertValidationError("the signer's bus certificate is not for client authentication")
    return cert



__all__ = ["BusFiles", "BusRefused", "bus_ca_files", "check_bus_answer", "import_bus_ca", "issue_bus",
           "load_bus_ca"]
