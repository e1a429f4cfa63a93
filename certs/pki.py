"""The organisation's PKI: CA, server and device certificates, key files.

Device identity is a short-lived client certificate issued by the org CA
(ECDSA P-256).  The device generates its key locally and sends only a CSR;
the CA ignores everything the CSR claims except its public key and assigns
the identity itself (subject CN and a ``urn:helpline:device:`` SAN URI).

Every check takes an explicit ``now`` so expiry and renewal are testable
without waiting.  Naive datetimes are taken to be UTC.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from certs.errors import CertValidationError, CsrError, PkiExistsError
from common.files import atomic_write

log = logging.getLogger(__name__)

DEVICE_URI_PREFIX = "urn:helpline:device:"
CA_LIFETIME = timedelta(days=3650)
SERVER_LIFETIME = timedelta(days=365)
DEVICE_LIFETIME = timedelta(days=30)
#: Backdating of not_before, so a peer whose clock lags a little accepts a fresh certificate.
CLOCK_SKEW = timedelta(minutes=5)
#: Upper bound on a CSR we are willing to parse (a P-256 CSR is well under 1 KiB).
MAX_CSR_BYTES = 16 * 1024

_DEVICE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PLACEHOLDER_CN = "helpline-device"


def _utc(now: datetime) -> datetime:
    """Return ``now`` as an aware UTC datetime (naive values are taken to be UTC)."""
    if now.tzinfo is None:
        return now.replace(tzinfo=UTC)
    return now.astimezone(UTC)


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class PkiPaths:
    """Where ``init_pki`` keeps each file of the PKI inside one directory."""

    directory: Path
    ca_pem: Path
    ca_key: Path
    server_pem: Path
    server_key: Path
    grant_key: Path
    grant_pub: Path

    @classmethod
    def from_dir(cls, directory: Path) -> PkiPaths:
        """Return the standard file layout under ``directory``."""
        d = Path(directory)
        return cls(
            directory=d,
            ca_pem=d / "ca.pem",
            ca_key=d / "ca.key",
            server_pem=d / "server.pem",
            server_key=d / "server.key",
            grant_key=d / "grant.key",
            grant_pub=d / "grant.pub",
        )

    def files(self) -> tuple[Path, ...]:
        """All files of the PKI (not the directory)."""
        return (self.ca_pem, self.ca_key, self.server_pem, self.server_key, self.grant_key, self.grant_pub)


def write_private_key(path: Path, key: PrivateKeyTypes) -> None:
    """Write ``key`` as unencrypted PEM PKCS8 with mode 0600, atomically."""
    atomic_write(path, private_key_pem(key), 0o600)


def private_key_pem(key: PrivateKeyTypes) -> bytes:
    """``key`` as unencrypted PEM PKCS8 (for files of mode 0600 only)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    """Write ``cert`` as PEM with mode 0644, atomically (certificates are public)."""
    atomic_write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def load_certificate(path: Path) -> x509.Certificate:
    """Load one PEM certificate from ``path``."""
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def load_private_key(path: Path) -> PrivateKeyTypes:
    """Load an unencrypted PEM private key from ``path``."""
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


# --------------------------------------------------------------------------- keys and CSRs


def generate_device_key() -> ec.EllipticCurvePrivateKey:
    """Generate a device's ECDSA P-256 key (done on the device; the key never leaves it)."""
    return ec.generate_private_key(ec.SECP256R1())


def build_csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Return a PEM CSR for ``key``; its subject is a placeholder, the CA assigns the identity."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _PLACEHOLDER_CN)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _check_device_id(device_id: str) -> None:
    """Reject device ids that would be awkward in a CN, a URN, a path or a log line."""
    if not _DEVICE_ID_RE.fullmatch(device_id):
        raise ValueError(f"invalid device id {device_id!r}: expected 1-128 of [A-Za-z0-9._-]")


def _p256_public_key_of(csr_pem: bytes) -> ec.EllipticCurvePublicKey:
    """Parse and check a device CSR; return its public key or raise ``CsrError``."""
    if len(csr_pem) > MAX_CSR_BYTES:
        raise CsrError(f"CSR too large ({len(csr_pem)} bytes, limit {MAX_CSR_BYTES})")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise CsrError(f"malformed CSR: {exc}") from exc
    try:
        signature_ok = csr.is_signature_valid
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrError(f"malformed CSR: {exc}") from exc
    if not signature_ok:
        raise CsrError("CSR signature is invalid")
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
        raise CsrError(f"key must be ECDSA P-256 (got {_describe_key(public_key)})")
    return public_key


def _describe_key(key: object) -> str:
    """Short human description of a public key's type, for error messages."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    return type(key).__name__.lstrip("_")


# --------------------------------------------------------------------------- identity helpers


def certificate_fingerprint_sha256(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 over the certificate's DER encoding."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def certificate_serial_hex(cert: x509.Certificate) -> str:
    """The certificate serial number as lowercase hex (no padding), e.g. for revocation lists."""
    return f"{cert.serial_number:x}"


def device_id_from_certificate(cert: x509.Certificate) -> str:
    """The device id named by ``cert``: its ``urn:helpline:device:`` SAN URI, else its CN.

    This only reads the certificate; it does not validate it (see
    ``validate_device_certificate``).
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith(DEVICE_URI_PREFIX) and len(uri) > len(DEVICE_URI_PREFIX):
                return uri[len(DEVICE_URI_PREFIX) :]
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if cns:
        value = cns[0].value
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if value:
            return value
    raise CertValidationError("certificate names no device (no device SAN URI and no CN)")


def _server_san(server_names: Iterable[str]) -> x509.SubjectAlternativeName:
    """SANs for the server certificate: each name as IP or DNS, plus localhost and 127.0.0.1."""
    entries: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in [*server_names, "localhost", "127.0.0.1"]:
        name = name.strip()
        if not name:
            raise ValueError("empty server name")
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            key = "dns:" + name.lower()
            entry: x509.GeneralName = x509.DNSName(name.lower())
        else:
            key = f"ip:{ip}"
            entry = x509.IPAddress(ip)
        if key not in seen:
            seen.add(key)
            entries.append(entry)
    return x509.SubjectAlternativeName(entries)


def _ski(public_key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


# --------------------------------------------------------------------------- the CA


class CertificateAuthority:
    """The org CA: a self-signed P-256 certificate and its key; issues server and device certs."""

    def __init__(self, certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey) -> None:
        if certificate.public_key() != private_key.public_key():
            raise ValueError("CA private key does not match the CA certificate")
        self.certificate = certificate
        self._key = private_key

    @classmethod
    def create(cls, *, now: datetime, common_name: str = "Helpline Org CA") -> CertificateAuthority:
        """Generate a new self-signed CA valid for ten years from ``now``."""
        now = _utc(now)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        ski = _ski(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """Load ``ca.pem`` and ``ca.key`` from a PKI directory made by ``init_pki``."""
        paths = PkiPaths.from_dir(directory)
        cert = load_certificate(paths.ca_pem)
        key = load_private_key(paths.ca_key)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{paths.ca_key}: CA key must be an EC key")
        return cls(cert, key)

    def write_files(self, cert_path: Path, key_path: Path) -> None:
        """Write the CA certificate (0644) and its private key (0600)."""
        write_private_key(key_path, self._key)
        write_certificate(cert_path, self.certificate)

    @property
    def fingerprint_sha256(self) -> str:
        """Lowercase hex SHA-256 of the CA certificate DER: what agents pin at enrollment."""
        return certificate_fingerprint_sha256(self.certificate)

    def _leaf_builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime, lifetime: timedelta
    ) -> x509.CertificateBuilder:
        """Common part of every end-entity certificate this CA issues."""
        now = _utc(now)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(_ski(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )

    def issue_server_certificate(
        self,
        public_key: ec.EllipticCurvePublicKey,
        server_names: list[str],
        *,
        now: datetime,
        lifetime: timedelta = SERVER_LIFETIME,
    ) -> x509.Certificate:
        """Issue a TLS server certificate for ``server_names`` (plus localhost and 127.0.0.1)."""
        san = _server_san(server_names)
        cn = server_names[0].strip() if server_names else "localhost"
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        cert = (
            self._leaf_builder(subject, public_key, now, lifetime)
            .add_extension(san, critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        log.info("issued server certificate serial=%s names=%s", certificate_serial_hex(cert), server_names)
        return cert

    def sign_device_csr(
        self,
        csr_pem: bytes,
        device_id: str,
        *,
        now: datetime,
        lifetime: timedelta = DEVICE_LIFETIME,
    ) -> x509.Certificate:
        """Issue a device client certificate for the key in ``csr_pem``.

        Only the CSR's public key is used; the subject, SANs and extensions
        it requests are ignored, because the identity is the CA's decision.
        Raises ``CsrError`` for a malformed CSR, a bad CSR signature or a key
        that is not ECDSA P-256; ``ValueError`` for an unusable device id.
        """
        _check_device_id(device_id)
        public_key = _p256_public_key_of(csr_pem)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(DEVICE_URI_PREFIX + device_id)])
        cert = (
            self._leaf_builder(subject, public_key, now, lifetime)
            .add_extension(san, critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        log.info("issued device certificate device=%s serial=%s", device_id, certificate_serial_hex(cert))
        return cert


# --------------------------------------------------------------------------- init


def init_pki(
    directory: Path,
    server_names: list[str],
    *,
    force: bool = False,
    now: datetime | None = None,
) -> PkiPaths:
    """Create the org CA, a server certificate and the Ed25519 grant-signing key in ``directory``.

    The directory is made 0700 and private keys are created 0600.  Refuses
    with ``PkiExistsError`` if any PKI file already exists, unless ``force``.
    """
    now = _utc(now if now is not None else datetime.now(UTC))
    paths = PkiPaths.from_dir(Path(directory))
    existing = [p for p in paths.files() if p.exists()]
    if existing and not force:
        raise PkiExistsError("refusing to overwrite existing PKI files: " + ", ".join(str(p) for p in existing))
    paths.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask and ignored for an existing directory.
    os.chmod(paths.directory, 0o700)

    ca = CertificateAuthority.create(now=now)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = ca.issue_server_certificate(server_key.public_key(), list(server_names), now=now)
    grant_key = ed25519.Ed25519PrivateKey.generate()

    ca.write_files(paths.ca_pem, paths.ca_key)
    write_private_key(paths.server_key, server_key)
    write_certificate(paths.server_pem, server_cert)
    write_private_key(paths.grant_key, grant_key)
    atomic_write(
        paths.grant_pub,
        grant_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )
    log.info("initialised PKI in %s (CA sha256 %s)", paths.directory, ca.fingerprint_sha256)
    return paths


# --------------------------------------------------------------------------- validation


def validate_device_certificate(cert: x509.Certificate, ca_cert: x509.Certificate, *, now: datetime) -> str:
    """Check ``cert`` is a device certificate issued by ``ca_cert`` and valid at ``now``.

    Returns the device id.  Raises ``CertValidationError`` when the chain,
    the validity period or the clientAuth usage does not hold.  Revocation
    and device status are the server's job (it owns that state).
    """
    now = _utc(now)
    verifier = PolicyBuilder().store(Store([ca_cert])).time(now).build_client_verifier()
    try:
        verifier.verify(cert, [])
    except VerificationError as exc:
        raise CertValidationError(f"device certificate rejected: {exc}") from exc
    # The verifier accepts a leaf without any EKU extension; a device certificate must say clientAuth.
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise CertValidationError("device certificate has no extended key usage") from exc
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise CertValidationError("device certificate lacks the clientAuth extended key usage")
    return device_id_from_certificate(cert)


def renewal_due(cert: x509.Certificate, now: datetime) -> bool:
    """True once two-thirds of the certificate's lifetime has elapsed at ``now``."""
    start = cert.not_valid_before_utc
    lifetime = cert.not_valid_after_utc - start
    return _utc(now) >= start + lifetime * 2 / 3
