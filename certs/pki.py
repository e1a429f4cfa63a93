"""The organisation's TLS PKI: an offline root, an issuing intermediate per server node, leaves.

* The **org TLS root** (ECDSA P-256, ten years) lives offline on an administrator's
  workstation, its key encrypted with a passphrase.  It signs only intermediates.
* Each server node holds a **short-lived issuing intermediate** (60 days by default, at most
  90; path length 0; name constraints limiting server names to the node's own).  It issues
  the node's server certificate and device certificates, none of which outlives it.  A
  compromised node can mint device certificates until its intermediate expires, never a
  new intermediate: the root's key is not there (the server refuses to start if it is).
* Device identity is a short-lived client certificate (ECDSA P-256).  The device generates
  its key locally and sends only a CSR; the CA ignores everything the CSR claims except its
  public key and assigns the identity itself (subject CN and a ``urn:helpline:device:`` SAN URI).

Agents pin the **root** (its certificate's SHA-256); leaves travel with their intermediate
(``server.pem`` and a device's ``cert.pem`` are chains, leaf first) so any node's chain
verifies up to the pinned root.

Every check takes an explicit ``now`` so expiry and renewal are testable without waiting.
Naive datetimes are taken to be UTC.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from certs.errors import CertValidationError, CsrError, IssuerExpiredError, PkiExistsError, RootKeyError
from common.files import atomic_write

log = logging.getLogger(__name__)

DEVICE_URI_PREFIX = "urn:helpline:device:"
ROOT_LIFETIME = timedelta(days=3650)
#: An intermediate's default and longest lives: short, so a stolen one is soon worthless.
INTERMEDIATE_LIFETIME = timedelta(days=60)
MAX_INTERMEDIATE_LIFETIME = timedelta(days=90)
#: Leaves never outlive their issuer: these are upper bounds, capped at the intermediate's end.
SERVER_LIFETIME = timedelta(days=365)
DEVICE_LIFETIME = timedelta(days=30)
#: The root key's passphrase, at least (as the trust root's in ``certs.ceremony``).
MIN_ROOT_PASSPHRASE = 12
ROOT_NAME = "Helpline Org TLS Root"
#: Roots made before delegation had 1: they certify node intermediates directly and cannot delegate.
ROOT_PATH_LENGTH = 2
#: Backdating of not_before, so a peer whose clock lags a little accepts a fresh certificate.
CLOCK_SKEW = timedelta(minutes=5)
#: Upper bound on a CSR we are willing to parse (a P-256 CSR is well under 1 KiB).
MAX_CSR_BYTES = 16 * 1024

_DEVICE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PLACEHOLDER_CN = "helpline-device"


def as_utc(now: datetime) -> datetime:
    """Return ``now`` as an aware UTC datetime (naive values are taken to be UTC)."""
    if now.tzinfo is None:
        return now.replace(tzinfo=UTC)
    return now.astimezone(UTC)


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class PkiPaths:
    """The files of a PKI directory: a server node's (``init_pki``, ``install_intermediate``) or the root's.

    A node's directory holds ``ca.pem`` (the root's certificate, public), ``intermediate.pem``
    and ``intermediate.key`` (its issuing CA) and ``server.pem`` (the server certificate
    followed by the intermediate) with ``server.key``.  A root directory holds ``ca.pem`` and
    ``ca.key`` (encrypted).  A node's directory must never hold ``ca.key``.
    """

    directory: Path
    ca_pem: Path
    ca_key: Path
    intermediate_pem: Path
    intermediate_key: Path
    server_pem: Path
    server_key: Path

    @classmethod
    def from_dir(cls, directory: Path) -> PkiPaths:
        """Return the standard file layout under ``directory``."""
        d = Path(directory)
        return cls(
            directory=d,
            ca_pem=d / "ca.pem",
            ca_key=d / "ca.key",
            intermediate_pem=d / "intermediate.pem",
            intermediate_key=d / "intermediate.key",
            server_pem=d / "server.pem",
            server_key=d / "server.key",
        )

    def files(self) -> tuple[Path, ...]:
        """The files of a server node's PKI (not the directory; never the root's key)."""
        return (self.ca_pem, self.intermediate_pem, self.intermediate_key, self.server_pem, self.server_key)

    def root_files(self) -> tuple[Path, ...]:
        """The files of the root's directory."""
        return (self.ca_pem, self.ca_key)


def _private_directory(directory: Path) -> None:
    """Create ``directory`` with mode 0700 (mkdir's mode is filtered by the umask and ignored if it exists)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


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


def _check_passphrase(passphrase: bytes) -> None:
    if len(passphrase) < MIN_ROOT_PASSPHRASE:
        raise RootKeyError(f"the root key's passphrase must be at least {MIN_ROOT_PASSPHRASE} characters")


def write_encrypted_private_key(path: Path, key: PrivateKeyTypes, passphrase: bytes) -> None:
    """Write ``key`` as PEM PKCS8 encrypted with ``passphrase`` (the best scheme available), 0600."""
    _check_passphrase(passphrase)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    atomic_write(path, pem, 0o600)


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    """Write ``cert`` as PEM with mode 0644, atomically (certificates are public)."""
    write_certificates(path, [cert])


def write_certificates(path: Path, certs: Iterable[x509.Certificate]) -> None:
    """Write a chain (leaf first) as concatenated PEM with mode 0644, atomically."""
    atomic_write(path, pem_chain(certs), 0o644)


def pem_chain(certs: Iterable[x509.Certificate]) -> bytes:
    """Certificates as concatenated PEM, in the order given (a chain: leaf first)."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def load_certificate(path: Path) -> x509.Certificate:
    """Load the first PEM certificate from ``path`` (the leaf, when the file is a chain)."""
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Load every PEM certificate from ``path``, in order (a chain file: leaf first)."""
    return x509.load_pem_x509_certificates(Path(path).read_bytes())


def load_private_key(path: Path) -> PrivateKeyTypes:
    """Load an unencrypted PEM private key from ``path``."""
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


def load_encrypted_private_key(path: Path, passphrase: bytes) -> PrivateKeyTypes:
    """Load a passphrase-encrypted PEM private key; ``RootKeyError`` if it cannot be decrypted."""
    try:
        return serialization.load_pem_private_key(Path(path).read_bytes(), password=passphrase)
    except (ValueError, TypeError) as exc:
        raise RootKeyError(f"cannot decrypt {path}: wrong passphrase, or not an encrypted private key") from exc


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


def csr_public_key(csr_pem: bytes) -> ec.EllipticCurvePublicKey:
    """The ECDSA P-256 key of a size-limited, well-signed PEM CSR; ``CsrError`` otherwise."""
    return _p256_public_key_of(csr_pem)


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


def _server_names(server_names: Iterable[str]) -> list[x509.DNSName | x509.IPAddress]:
    """Each server name as a DNS name or IP address, plus localhost and 127.0.0.1, without repeats."""
    entries: list[x509.DNSName | x509.IPAddress] = []
    seen: set[str] = set()
    for name in [*server_names, "localhost", "127.0.0.1"]:
        name = name.strip()
        if not name:
            raise ValueError("empty server name")
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            key = "dns:" + name.lower()
            entry: x509.DNSName | x509.IPAddress = x509.DNSName(name.lower())
        else:
            key = f"ip:{ip}"
            entry = x509.IPAddress(ip)
        if key not in seen:
            seen.add(key)
            entries.append(entry)
    return entries


def _server_san(server_names: Iterable[str]) -> x509.SubjectAlternativeName:
    """SANs for the server certificate: each name as IP or DNS, plus localhost and 127.0.0.1."""
    return x509.SubjectAlternativeName(_server_names(server_names))


def name_constraints(server_names: Iterable[str]) -> x509.NameConstraints:
    """A CA's permitted subtrees for ``server_names`` (as a node intermediate's; see below)."""
    return _name_constraints(server_names)


def _name_constraints(server_names: Iterable[str]) -> x509.NameConstraints:
    """An intermediate's permitted subtrees: the node's DNS names (and their subdomains) and IP addresses."""
    permitted: list[x509.GeneralName] = []
    for entry in _server_names(server_names):
        if isinstance(entry, x509.IPAddress):
            permitted.append(x509.IPAddress(ipaddress.ip_network(entry.value)))
        else:
            permitted.append(entry)
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)


def _ski(public_key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


# --------------------------------------------------------------------------- the CAs


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def ca_builder(common_name: str, public_key: ec.EllipticCurvePublicKey, server_names: Iterable[str], *,
               not_before: datetime, not_after: datetime, path_length: int) -> x509.CertificateBuilder:
    """A CA certificate limited to ``server_names`` (name constraints), not yet given its issuer or signed."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(_name_constraints(server_names), critical=True)
        .add_extension(_ski(public_key), critical=False)
    )


def _check_key_matches(certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey, what: str) -> None:
    if certificate.public_key() != private_key.public_key():
        raise ValueError(f"{what} private key does not match its certificate")


def _ec_key(key: PrivateKeyTypes, path: Path) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: a CA key must be an EC key")
    return key


class RootCA:
    """The org TLS root: self-signed, long-lived, kept offline; it certifies issuing intermediates only.

    Its key is written encrypted with a passphrase and is never needed by a server: only
    to create (or rotate) a node's intermediate, on the administrator's workstation.
    """

    def __init__(self, certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey) -> None:
        _check_key_matches(certificate, private_key, "root")
        self.certificate = certificate
        self._key = private_key

    @classmethod
    def create(cls, *, now: datetime, common_name: str = ROOT_NAME, lifetime: timedelta = ROOT_LIFETIME) -> RootCA:
        """Generate a new self-signed root valid for ``lifetime`` (ten years) from ``now``."""
        now = as_utc(now)
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
            .not_valid_after(now + lifetime)
            # Path length 2: root -> node intermediate -> leaf, or root -> delegation (the signer's,
            # certs.delegation) -> node intermediate -> leaf; no deeper.
            .add_extension(x509.BasicConstraints(ca=True, path_length=ROOT_PATH_LENGTH), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path, passphrase: bytes) -> RootCA:
        """Load ``ca.pem`` and the encrypted ``ca.key`` from a root directory (``RootKeyError`` if it won't open)."""
        paths = PkiPaths.from_dir(directory)
        cert = load_certificate(paths.ca_pem)
        key = _ec_key(load_encrypted_private_key(paths.ca_key, passphrase), paths.ca_key)
        return cls(cert, key)

    def write_files(self, directory: Path, passphrase: bytes, *, force: bool = False) -> PkiPaths:
        """Write ``ca.pem`` (0644) and ``ca.key`` encrypted with ``passphrase`` (0600) into ``directory`` (0700)."""
        _check_passphrase(passphrase)
        paths = PkiPaths.from_dir(Path(directory))
        _refuse_existing(paths.root_files(), force)
        _private_directory(paths.directory)
        write_encrypted_private_key(paths.ca_key, self._key, passphrase)
        write_certificate(paths.ca_pem, self.certificate)
        return paths

    @property
    def fingerprint_sha256(self) -> str:
        """Lowercase hex SHA-256 of the root certificate DER: what agents pin at enrollment."""
        return certificate_fingerprint_sha256(self.certificate)

    def sign_ca(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        """Sign a CA certificate ``builder`` describes (``certs.delegation`` builds the signer's delegation)."""
        return builder.issuer_name(self.certificate.subject).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
        ).sign(self._key, hashes.SHA256())

    def new_intermediate(
        self, server_names: list[str], *, now: datetime, lifetime: timedelta = INTERMEDIATE_LIFETIME
    ) -> CertificateAuthority:
        """A fresh issuing intermediate for the server node reached as ``server_names``.

        Path length 0 (it issues leaves only); name constraints allow server certificates for
        the node's names (plus localhost and 127.0.0.1) and nothing else, so one node cannot
        impersonate another node or any other host to whoever trusts the root.  Device
        certificates carry only a URN, which no name constraint can express (RFC 5280's URI
        constraints match a host), so they are not constrained by name.
        """
        if not timedelta(0) < lifetime <= MAX_INTERMEDIATE_LIFETIME:
            raise ValueError(f"an intermediate lives at most {MAX_INTERMEDIATE_LIFETIME.days} days")
        now = as_utc(now)
        not_after = min(now + lifetime, self.certificate.not_valid_after_utc)
        key = ec.generate_private_key(ec.SECP256R1())
        first = server_names[0].strip() if server_names else "localhost"
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Helpline issuing CA {first} {now:%Y-%m-%d}")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(_name_constraints(server_names), critical=True)
            .add_extension(_ski(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        log.info("issued intermediate serial=%s names=%s until %s", certificate_serial_hex(cert), server_names,
                 not_after.isoformat())
        return CertificateAuthority(cert, key, self.certificate)


class CertificateAuthority:
    """A server node's issuing CA: the intermediate's certificate and key, and the root's certificate.

    Issues the node's server certificate and device certificates, each capped at the
    intermediate's own end.  ``fingerprint_sha256`` is the **root's**: what agents pin.

    A directory from before intermediates (``ca.key`` beside ``ca.pem``, no
    ``intermediate.pem``) loads as a CA that is its own root; the server runs on it only
    when ``allow_root_key_on_server`` says so (:mod:`certs.node`).
    """

    def __init__(
        self, certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey, root: x509.Certificate,
        links: tuple[x509.Certificate, ...] = (),
    ) -> None:
        _check_key_matches(certificate, private_key, "CA")
        if certificate != root:
            path = [certificate, *links, root]
            try:
                for child, parent in itertools.pairwise(path):
                    child.verify_directly_issued_by(parent)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise CertValidationError("the intermediate does not lead to the root in ca.pem") from exc
        self.certificate = certificate
        self.root = root
        #: Certificates between the intermediate and the root: the signer's delegation (``certs.delegation``).
        self.links = links
        self._key = private_key

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """Load the issuing CA of a server node's PKI directory (``init_pki``, ``install_intermediate``)."""
        paths = PkiPaths.from_dir(directory)
        root = load_certificate(paths.ca_pem)
        if not paths.intermediate_pem.exists() and paths.ca_key.exists():
            legacy = load_certificate(paths.ca_pem)
            return cls(legacy, _ec_key(load_private_key(paths.ca_key), paths.ca_key), legacy)
        cert, *links = load_certificates(paths.intermediate_pem)  # a delegated node's: + the delegation
        key = _ec_key(load_private_key(paths.intermediate_key), paths.intermediate_key)
        return cls(cert, key, root, tuple(links))

    @property
    def fingerprint_sha256(self) -> str:
        """Lowercase hex SHA-256 of the root certificate DER: what agents pin at enrollment."""
        return certificate_fingerprint_sha256(self.root)

    @property
    def signing_key(self) -> ec.EllipticCurvePrivateKey:
        """The intermediate's key: a delegated node proves its renewal request with it (``certs.node_link``)."""
        return self._key

    @property
    def is_root(self) -> bool:
        """True for a directory from before intermediates, whose CA is the root itself."""
        return self.certificate == self.root

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """What travels with each leaf so a peer that trusts only the root can build the path."""
        return () if self.is_root else (self.certificate, *self.links)

    @property
    def not_after(self) -> datetime:
        """The issuer's end: no certificate it issues outlives it."""
        return self.certificate.not_valid_after_utc

    def chain_pem(self, leaf: x509.Certificate) -> bytes:
        """``leaf`` followed by the intermediate, as PEM (what ``server.pem`` and a device's ``cert.pem`` hold)."""
        return pem_chain([leaf, *self.chain])

    def issued(self, cert: x509.Certificate) -> bool:
        """True if this CA signed ``cert`` (after a rotation, older device certificates were not)."""
        try:
            cert.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def _leaf_builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime, lifetime: timedelta
    ) -> x509.CertificateBuilder:
        """Common part of every end-entity certificate this CA issues (capped at the CA's own end)."""
        now = as_utc(now)
        if now >= self.not_after:
            raise IssuerExpiredError(
                f"the issuing CA expired at {self.not_after.isoformat()}: rotate it (helpline certs intermediate)"
            )
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(min(now + lifetime, self.not_after))
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
        """Issue a device client certificate for the key in ``csr_pem``, ending at the latest with this CA.

        Only the CSR's public key is used; the subject, SANs and extensions
        it requests are ignored, because the identity is the CA's decision.
        Raises ``CsrError`` for a malformed CSR, a bad CSR signature or a key
        that is not ECDSA P-256; ``ValueError`` for an unusable device id;
        ``IssuerExpiredError`` once this CA has expired.
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


# --------------------------------------------------------------------------- a node's directory


def _refuse_existing(files: Iterable[Path], force: bool) -> None:
    existing = [p for p in files if p.exists()]
    if existing and not force:
        raise PkiExistsError("refusing to overwrite existing PKI files: " + ", ".join(str(p) for p in existing))


def install_intermediate(
    directory: Path,
    ca: CertificateAuthority,
    server_names: list[str],
    *,
    now: datetime,
    force: bool = False,
) -> PkiPaths:
    """Write a node's PKI directory: the root's certificate, ``ca``'s key and certificate, and a
    server certificate for ``server_names`` issued by ``ca`` (``server.pem`` = leaf + intermediate).

    Replacing the intermediate of the same root (a rotation) needs no ``force``; anything else
    already there (another root's files, a directory from before intermediates) does.  The
    directory is made 0700, private keys 0600.
    """
    paths = PkiPaths.from_dir(Path(directory))
    if not _same_root(paths, ca.root):
        _refuse_existing([*paths.files(), paths.ca_key], force)
    _private_directory(paths.directory)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = ca.issue_server_certificate(server_key.public_key(), list(server_names), now=now)
    write_certificate(paths.ca_pem, ca.root)
    write_private_key(paths.intermediate_key, ca._key)
    write_certificates(paths.intermediate_pem, ca.chain)
    write_private_key(paths.server_key, server_key)
    atomic_write(paths.server_pem, ca.chain_pem(server_cert), 0o644)
    # An intermediate straight from the root ends a delegated node's renewals from the signer (certs.node_link).
    (paths.directory / "signer.json").unlink(missing_ok=True)
    log.info("installed intermediate in %s (until %s; root sha256 %s)", paths.directory,
             ca.not_after.isoformat(), ca.fingerprint_sha256)
    return paths


def _same_root(paths: PkiPaths, root: x509.Certificate) -> bool:
    """True if ``paths`` is a node directory of ``root`` made by ``install_intermediate`` (not a legacy one)."""
    try:
        return load_certificate(paths.ca_pem) == root and not paths.ca_key.exists()
    except (OSError, ValueError):
        return False


def init_pki(
    directory: Path,
    server_names: list[str],
    *,
    force: bool = False,
    now: datetime | None = None,
    root_out: Path | None = None,
    passphrase: bytes | None = None,
    lifetime: timedelta = INTERMEDIATE_LIFETIME,
) -> PkiPaths:
    """Root, intermediate and server certificate in one go: a single-machine or demo installation.

    ``directory`` becomes a server node's PKI (see ``install_intermediate``); the root's key
    goes to ``root_out``, encrypted with ``passphrase``, and belongs offline from then on.
    Without ``root_out`` the root's key is discarded once the intermediate is signed: nobody
    can make another intermediate (demos, tests).  Refuses with ``PkiExistsError`` if any
    file already exists, unless ``force``.  No key that authorizes anything on a device is
    made here: that is the offline org root's job (``helpline trust``), never the server's.
    """
    now = as_utc(now if now is not None else datetime.now(UTC))
    paths = PkiPaths.from_dir(Path(directory))
    _refuse_existing([*paths.files(), paths.ca_key], force)
    if root_out is not None:
        if passphrase is None:
            raise ValueError("the root's key is written encrypted: give its passphrase")
        _check_passphrase(passphrase)
        if Path(root_out).resolve() == paths.directory.resolve():
            raise ValueError("the root's key must not go into the server's PKI directory")
        _refuse_existing(PkiPaths.from_dir(Path(root_out)).root_files(), force)
    root = RootCA.create(now=now)
    ca = root.new_intermediate(list(server_names), now=now, lifetime=lifetime)
    if root_out is not None and passphrase is not None:
        root.write_files(Path(root_out), passphrase, force=force)
    install_intermediate(paths.directory, ca, list(server_names), now=now, force=True)
    log.info("initialised PKI in %s (root sha256 %s)", paths.directory, root.fingerprint_sha256)
    return paths


# --------------------------------------------------------------------------- validation


def validate_device_certificate(
    cert: x509.Certificate,
    root_cert: x509.Certificate,
    *,
    now: datetime,
    intermediates: Iterable[x509.Certificate] = (),
) -> str:
    """Check ``cert`` is a device certificate that chains (through ``intermediates``) to ``root_cert``
    and is valid at ``now``.

    Returns the device id.  Raises ``CertValidationError`` when the chain,
    the validity period or the clientAuth usage does not hold.  Revocation
    and device status are the server's job (it owns that state).
    """
    now = as_utc(now)
    verifier = PolicyBuilder().store(Store([root_cert])).time(now).build_client_verifier()
    try:
        verifier.verify(cert, list(intermediates))
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


def check_issued_chain(
    chain_pem: bytes, root_cert: x509.Certificate, public_key: ec.EllipticCurvePublicKey
) -> x509.Certificate:
    """Check a chain a server handed this device (enrollment, renewal) before storing it; return its leaf.

    The leaf must certify ``public_key`` (the key this device just generated) and chain to
    ``root_cert`` (the pinned root) through the certificates that follow it.  Checked at the
    leaf's issuing time: a device whose clock lags must not throw away a good certificate.
    Raises ``CertValidationError``.
    """
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CertValidationError(f"not a PEM certificate chain: {exc}") from exc
    leaf, intermediates = certs[0], certs[1:]
    if leaf.public_key() != public_key:
        raise CertValidationError("the certificate is not for this device's key")
    validate_device_certificate(leaf, root_cert, now=leaf.not_valid_before_utc + CLOCK_SKEW,
                                intermediates=intermediates)
    return leaf


def renewal_due(cert: x509.Certificate, now: datetime) -> bool:
    """True once two-thirds of the certificate's lifetime has elapsed at ``now``."""
    start = cert.not_valid_before_utc
    lifetime = cert.not_valid_after_utc - start
    return as_utc(now) >= start + lifetime * 2 / 3
