"""Tests for certs.pki: PKI initialisation, CSR signing, validation and renewal."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.errors import CertError, CertValidationError, CsrError, PkiExistsError
from certs.pki import (
    CertificateAuthority,
    PkiPaths,
    build_csr,
    certificate_fingerprint_sha256,
    certificate_serial_hex,
    device_id_from_certificate,
    generate_device_key,
    init_pki,
    load_certificate,
    load_private_key,
    renewal_due,
    validate_device_certificate,
    write_private_key,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """Run with umask 000 so file modes come from the code, not the environment."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki") / "org"
    init_pki(directory, ["helpline.example.org", "192.0.2.10"], now=NOW)
    return directory


@pytest.fixture(scope="module")
def ca(pki_dir: Path) -> CertificateAuthority:
    return CertificateAuthority.load(pki_dir)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _csr_for(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, algorithm)
    )
    return csr.public_bytes(serialization.Encoding.PEM)


# --------------------------------------------------------------------------- init_pki


def test_init_writes_all_files_with_private_keys_0600(tmp_path: Path, permissive_umask: None) -> None:
    """init_pki creates every PKI file; keys are 0600 and the directory 0700 even with umask 000."""
    paths = init_pki(tmp_path / "pki", ["helpline.example.org"], now=NOW)
    assert paths == PkiPaths.from_dir(tmp_path / "pki")
    for f in paths.files():
        assert f.is_file(), f
    for key in (paths.ca_key, paths.server_key, paths.grant_key):
        assert _mode(key) == 0o600, key
    for public in (paths.ca_pem, paths.server_pem, paths.grant_pub):
        assert _mode(public) == 0o644, public
    assert _mode(paths.directory) == 0o700
    assert sorted(p.name for p in paths.directory.iterdir()) == sorted(p.name for p in paths.files())


def test_init_key_types_and_ca_extensions(pki_dir: Path) -> None:
    """The CA is a self-signed P-256 CA (pathlen 0, certSign/crlSign, SKI); grant key is Ed25519."""
    paths = PkiPaths.from_dir(pki_dir)
    ca_cert = load_certificate(paths.ca_pem)
    assert ca_cert.subject == ca_cert.issuer
    ca_key = ca_cert.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey) and isinstance(ca_key.curve, ec.SECP256R1)
    ca_cert.verify_directly_issued_by(ca_cert)
    bc = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ca_cert.not_valid_after_utc - NOW >= timedelta(days=3649)
    assert isinstance(load_private_key(paths.grant_key), ed25519.Ed25519PrivateKey)
    pub = serialization.load_pem_public_key(paths.grant_pub.read_bytes())
    assert isinstance(pub, ed25519.Ed25519PublicKey)


def test_server_certificate_sans_and_eku(pki_dir: Path) -> None:
    """The server cert names each server name (DNS or IP) plus localhost and 127.0.0.1, for serverAuth."""
    paths = PkiPaths.from_dir(pki_dir)
    cert = load_certificate(paths.server_pem)
    cert.verify_directly_issued_by(load_certificate(paths.ca_pem))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["helpline.example.org", "localhost"]
    assert sorted(str(ip) for ip in san.get_values_for_type(x509.IPAddress)) == ["127.0.0.1", "192.0.2.10"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.not_valid_after_utc - NOW == timedelta(days=365)


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    """A second init in the same directory raises PkiExistsError and leaves the CA untouched."""
    paths = init_pki(tmp_path, ["a.example"], now=NOW)
    before = paths.ca_pem.read_bytes()
    with pytest.raises(PkiExistsError):
        init_pki(tmp_path, ["a.example"], now=NOW)
    assert paths.ca_pem.read_bytes() == before


def test_init_refuses_if_any_single_file_exists(tmp_path: Path) -> None:
    """Even one leftover PKI file (here grant.key) blocks init without force."""
    (tmp_path / "grant.key").write_bytes(b"old")
    with pytest.raises(PkiExistsError, match=r"grant\.key"):
        init_pki(tmp_path, [], now=NOW)
    assert not (tmp_path / "ca.pem").exists()


def test_init_force_replaces(tmp_path: Path, permissive_umask: None) -> None:
    """With force, init replaces the PKI with a new CA and keeps keys 0600."""
    first = CertificateAuthority.load(init_pki(tmp_path, [], now=NOW).directory).fingerprint_sha256
    paths = init_pki(tmp_path, [], now=NOW, force=True)
    second = CertificateAuthority.load(paths.directory).fingerprint_sha256
    assert first != second
    assert _mode(paths.ca_key) == 0o600


def test_fingerprint_is_sha256_of_der(ca: CertificateAuthority) -> None:
    """fingerprint_sha256 is the lowercase hex SHA-256 of the CA certificate DER."""
    import hashlib

    der = ca.certificate.public_bytes(serialization.Encoding.DER)
    assert ca.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    assert ca.fingerprint_sha256 == certificate_fingerprint_sha256(ca.certificate)


# --------------------------------------------------------------------------- key files


def test_write_private_key_replaces_atomically_with_0600(tmp_path: Path, permissive_umask: None) -> None:
    """write_private_key overwrites an existing file, leaves it 0600 and no temp files behind."""
    path = tmp_path / "device.key"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    key = generate_device_key()
    write_private_key(path, key)
    assert _mode(path) == 0o600
    loaded = load_private_key(path)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == key.private_numbers()
    assert [p.name for p in tmp_path.iterdir()] == ["device.key"]


# --------------------------------------------------------------------------- CSR signing


def test_sign_device_csr_happy_path(ca: CertificateAuthority) -> None:
    """A P-256 CSR yields a clientAuth cert for the device id, 30 days, backdated 5 minutes."""
    key = generate_device_key()
    cert = ca.sign_device_csr(build_csr(key), "dev-42", now=NOW)
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-42"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:helpline:device:dev-42"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(days=30)
    assert device_id_from_certificate(cert) == "dev-42"
    assert validate_device_certificate(cert, ca.certificate, now=NOW) == "dev-42"


def test_csr_subject_is_ignored(ca: CertificateAuthority) -> None:
    """Whatever identity the CSR claims, the CA names the device it was told to."""
    key = generate_device_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:helpline:device:other")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert = ca.sign_device_csr(csr.public_bytes(serialization.Encoding.PEM), "dev-7", now=NOW)
    assert device_id_from_certificate(cert) == "dev-7"
    assert "admin" not in cert.subject.rfc4514_string()


def test_serials_are_random_and_hex(ca: CertificateAuthority) -> None:
    """Two certs for the same CSR get different serials, rendered as lowercase hex."""
    csr = build_csr(generate_device_key())
    a = ca.sign_device_csr(csr, "dev-1", now=NOW)
    b = ca.sign_device_csr(csr, "dev-1", now=NOW)
    assert a.serial_number != b.serial_number
    assert int(certificate_serial_hex(a), 16) == a.serial_number
    assert certificate_serial_hex(a) == certificate_serial_hex(a).lower()


@pytest.mark.parametrize(
    "garbage", [b"", b"not a csr", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"]
)
def test_malformed_csr_rejected(ca: CertificateAuthority, garbage: bytes) -> None:
    """Bytes that are not a PEM CSR raise CsrError saying it is malformed."""
    with pytest.raises(CsrError, match="malformed CSR"):
        ca.sign_device_csr(garbage, "dev-1", now=NOW)


def test_oversized_csr_rejected(ca: CertificateAuthority) -> None:
    """A CSR above the size limit is refused before parsing."""
    with pytest.raises(CsrError, match="too large"):
        ca.sign_device_csr(b"A" * 100_000, "dev-1", now=NOW)


def test_tampered_csr_signature_rejected(ca: CertificateAuthority) -> None:
    """A CSR whose signed content was altered raises CsrError about the signature."""
    csr = x509.load_pem_x509_csr(build_csr(generate_device_key()))
    der = csr.public_bytes(serialization.Encoding.DER)
    assert b"helpline-device" in der
    tampered = x509.load_der_x509_csr(der.replace(b"helpline-device", b"helpline-devicX"))
    with pytest.raises(CsrError, match="signature"):
        ca.sign_device_csr(tampered.public_bytes(serialization.Encoding.PEM), "dev-1", now=NOW)


def test_rsa_csr_rejected(ca: CertificateAuthority) -> None:
    """An RSA CSR raises CsrError: key must be ECDSA P-256."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(CsrError, match="key must be ECDSA P-256"):
        ca.sign_device_csr(_csr_for(key), "dev-1", now=NOW)


def test_p384_csr_rejected(ca: CertificateAuthority) -> None:
    """A P-384 CSR raises CsrError: only P-256 is accepted."""
    key = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(CsrError, match="key must be ECDSA P-256"):
        ca.sign_device_csr(_csr_for(key), "dev-1", now=NOW)


def test_ed25519_csr_rejected(ca: CertificateAuthority) -> None:
    """An Ed25519 CSR raises CsrError: only P-256 is accepted."""
    with pytest.raises(CsrError, match="key must be ECDSA P-256"):
        ca.sign_device_csr(_csr_for(ed25519.Ed25519PrivateKey.generate()), "dev-1", now=NOW)


@pytest.mark.parametrize("bad_id", ["", "a b", "../x", "dev/1", "-x", "x" * 200, "dév"])
def test_bad_device_id_rejected(ca: CertificateAuthority, bad_id: str) -> None:
    """Device ids outside [A-Za-z0-9._-] (1-128, not starting with punctuation) are refused."""
    with pytest.raises(ValueError, match="invalid device id"):
        ca.sign_device_csr(build_csr(generate_device_key()), bad_id, now=NOW)


# --------------------------------------------------------------------------- validation


@pytest.fixture(scope="module")
def device_cert(ca: CertificateAuthority) -> x509.Certificate:
    return ca.sign_device_csr(build_csr(generate_device_key()), "dev-9", now=NOW)


def test_validation_accepts_naive_utc_now(ca: CertificateAuthority, device_cert: x509.Certificate) -> None:
    """A naive `now` is taken as UTC."""
    naive = NOW.replace(tzinfo=None) + timedelta(days=1)
    assert validate_device_certificate(device_cert, ca.certificate, now=naive) == "dev-9"


def test_validation_fails_after_expiry(ca: CertificateAuthority, device_cert: x509.Certificate) -> None:
    """One second past not_after the certificate is rejected."""
    later = device_cert.not_valid_after_utc + timedelta(seconds=1)
    assert validate_device_certificate(device_cert, ca.certificate, now=later - timedelta(seconds=2))
    with pytest.raises(CertValidationError, match="not valid at validation time"):
        validate_device_certificate(device_cert, ca.certificate, now=later)


def test_validation_fails_before_not_before(ca: CertificateAuthority, device_cert: x509.Certificate) -> None:
    """Before not_before (now - 5 min) the certificate is rejected."""
    with pytest.raises(CertValidationError):
        validate_device_certificate(device_cert, ca.certificate, now=NOW - timedelta(minutes=6))


def test_validation_fails_for_other_ca(ca: CertificateAuthority, device_cert: x509.Certificate) -> None:
    """A cert from another CA (same CA name, same device id) is rejected, in both directions."""
    other = CertificateAuthority.create(now=NOW)
    assert other.certificate.subject == ca.certificate.subject
    with pytest.raises(CertValidationError):
        validate_device_certificate(device_cert, other.certificate, now=NOW)
    foreign = other.sign_device_csr(build_csr(generate_device_key()), "dev-9", now=NOW)
    assert validate_device_certificate(foreign, other.certificate, now=NOW) == "dev-9"
    with pytest.raises(CertValidationError):
        validate_device_certificate(foreign, ca.certificate, now=NOW)


def test_server_cert_is_not_a_device_cert(pki_dir: Path, ca: CertificateAuthority) -> None:
    """A serverAuth-only certificate from the same CA does not pass as a device certificate."""
    server = load_certificate(PkiPaths.from_dir(pki_dir).server_pem)
    with pytest.raises(CertValidationError):
        validate_device_certificate(server, ca.certificate, now=NOW)


def test_ca_cert_is_not_a_device_cert(ca: CertificateAuthority) -> None:
    """The CA certificate itself is not accepted as a device (end-entity) certificate."""
    with pytest.raises(CertValidationError):
        validate_device_certificate(ca.certificate, ca.certificate, now=NOW)


def test_device_id_falls_back_to_cn(ca: CertificateAuthority) -> None:
    """Without a device SAN URI, the device id comes from the subject CN."""
    assert device_id_from_certificate(ca.certificate) == "Helpline Org CA"


def test_cert_errors_share_a_base() -> None:
    """Every certs error is a CertError."""
    for cls in (CsrError, PkiExistsError, CertValidationError):
        assert issubclass(cls, CertError)


# --------------------------------------------------------------------------- renewal


def test_renewal_due_at_two_thirds(device_cert: x509.Certificate) -> None:
    """renewal_due flips from False to True exactly at two-thirds of the lifetime."""
    start = device_cert.not_valid_before_utc
    two_thirds = start + (device_cert.not_valid_after_utc - start) * 2 / 3
    assert not renewal_due(device_cert, NOW)
    assert not renewal_due(device_cert, two_thirds - timedelta(seconds=1))
    assert renewal_due(device_cert, two_thirds)
    assert renewal_due(device_cert, device_cert.not_valid_after_utc + timedelta(days=1))
    assert two_thirds - NOW > timedelta(days=19)


def test_cert_without_eku_is_not_a_device_cert(pki_dir: Path, ca: CertificateAuthority) -> None:
    """A CA-signed leaf with a device SAN but no extended key usage is rejected."""
    ca_key = load_private_key(PkiPaths.from_dir(pki_dir).ca_key)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    leaf_key = generate_device_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-x")]))
        .issuer_name(ca.certificate.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=5))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:helpline:device:dev-x")]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    with pytest.raises(CertValidationError, match="extended key usage"):
        validate_device_certificate(cert, ca.certificate, now=NOW)
