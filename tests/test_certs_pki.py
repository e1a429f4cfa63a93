"""Tests for certs.pki and certs.node: the offline root, intermediates, CSR signing, validation, renewal."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from certs.errors import (
    CertError,
    CertValidationError,
    CsrError,
    IssuerExpiredError,
    PkiExistsError,
    RootKeyError,
    RootKeyOnServerError,
)
from certs.node import check_node_pki, expiry_warning, pki_status, root_key_files
from certs.pki import (
    CertificateAuthority,
    PkiPaths,
    RootCA,
    build_csr,
    certificate_fingerprint_sha256,
    certificate_serial_hex,
    check_issued_chain,
    device_id_from_certificate,
    generate_device_key,
    init_pki,
    install_intermediate,
    load_certificate,
    load_certificates,
    load_private_key,
    renewal_due,
    validate_device_certificate,
    write_private_key,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PASSPHRASE = b"correct horse battery staple"


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
    base = tmp_path_factory.mktemp("pki")
    init_pki(base / "org", ["helpline.example.org", "192.0.2.10"], now=NOW, root_out=base / "root",
             passphrase=PASSPHRASE)
    return base / "org"


@pytest.fixture(scope="module")
def root_dir(pki_dir: Path) -> Path:
    return pki_dir.parent / "root"


@pytest.fixture(scope="module")
def ca(pki_dir: Path) -> CertificateAuthority:
    return CertificateAuthority.load(pki_dir)


@pytest.fixture(scope="module")
def root(root_dir: Path) -> RootCA:
    return RootCA.load(root_dir, PASSPHRASE)


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


def test_init_writes_node_and_root_files_with_private_keys_0600(tmp_path: Path, permissive_umask: None) -> None:
    """init_pki writes the node's files and the root's elsewhere; keys 0600, directories 0700, even with umask 000."""
    paths = init_pki(tmp_path / "pki", ["helpline.example.org"], now=NOW, root_out=tmp_path / "root",
                     passphrase=PASSPHRASE)
    assert paths == PkiPaths.from_dir(tmp_path / "pki")
    assert set(paths.files()) <= set(paths.directory.iterdir())
    assert not paths.ca_key.exists() and root_key_files(paths.directory) == []  # the root's key is not on the server
    for key in (paths.intermediate_key, paths.server_key):
        assert _mode(key) == 0o600, key
    for public in (paths.ca_pem, paths.intermediate_pem, paths.server_pem):
        assert _mode(public) == 0o644, public
    root = PkiPaths.from_dir(tmp_path / "root")
    assert sorted(p.name for p in root.directory.iterdir()) == ["ca.key", "ca.pem"]
    assert _mode(root.ca_key) == 0o600 and _mode(root.directory) == 0o700 and _mode(paths.directory) == 0o700
    assert root.ca_pem.read_bytes() == paths.ca_pem.read_bytes()


def test_init_without_root_out_keeps_no_root_key(tmp_path: Path) -> None:
    """Without root_out (demos, tests) the root's key is discarded: no file holds it anywhere."""
    paths = init_pki(tmp_path / "pki", [], now=NOW)
    assert {p.parent for p in tmp_path.rglob("*") if p.is_file()} == {paths.directory}
    assert not paths.ca_key.exists() and root_key_files(paths.directory) == []


def test_init_refuses_root_key_inside_node_dir(tmp_path: Path) -> None:
    """root_out cannot be the server's own PKI directory, and a root key needs a passphrase."""
    with pytest.raises(ValueError, match="must not go into"):
        init_pki(tmp_path / "pki", [], now=NOW, root_out=tmp_path / "pki", passphrase=PASSPHRASE)
    with pytest.raises(ValueError, match="passphrase"):
        init_pki(tmp_path / "pki", [], now=NOW, root_out=tmp_path / "root")


def test_root_key_is_encrypted_at_rest(root_dir: Path, root: RootCA) -> None:
    """ca.key is an encrypted PKCS#8 key: unusable without the passphrase, refused with a wrong one."""
    key_file = PkiPaths.from_dir(root_dir).ca_key
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in key_file.read_bytes()
    with pytest.raises(TypeError, match="encrypted"):
        load_private_key(key_file)
    with pytest.raises(RootKeyError, match="wrong passphrase"):
        RootCA.load(root_dir, b"not the passphrase at all")
    assert root.certificate == load_certificate(PkiPaths.from_dir(root_dir).ca_pem)


def test_short_root_passphrase_refused(tmp_path: Path) -> None:
    """A root key passphrase under 12 characters is refused before anything is written."""
    with pytest.raises(RootKeyError, match="at least 12"):
        RootCA.create(now=NOW).write_files(tmp_path / "root", b"short")
    assert not (tmp_path / "root").exists()


def test_root_and_intermediate_extensions(pki_dir: Path, ca: CertificateAuthority) -> None:
    """The root is a self-signed P-256 CA (path length 1); the intermediate it signed has path length 0,
    name constraints for the node's names only, and lives 60 days."""
    paths = PkiPaths.from_dir(pki_dir)
    root_cert = load_certificate(paths.ca_pem)
    assert root_cert.subject == root_cert.issuer
    root_cert.verify_directly_issued_by(root_cert)
    public = root_cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1)
    bc = root_cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 2  # root -> delegation -> node intermediate -> leaf
    ku = root_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert root_cert.not_valid_after_utc - NOW >= timedelta(days=3649)

    inter = load_certificate(paths.intermediate_pem)
    assert inter == ca.certificate and ca.root == root_cert and not ca.is_root
    inter.verify_directly_issued_by(root_cert)
    bc = inter.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    nc = inter.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical and nc.value.excluded_subtrees is None
    assert sorted(str(n.value) for n in nc.value.permitted_subtrees or []) == [
        "127.0.0.1/32", "192.0.2.10/32", "helpline.example.org", "localhost"]
    assert inter.not_valid_after_utc == NOW + timedelta(days=60)
    assert ca.fingerprint_sha256 == certificate_fingerprint_sha256(root_cert)


def test_server_certificate_sans_eku_and_chain(pki_dir: Path, ca: CertificateAuthority) -> None:
    """server.pem is the server cert then the intermediate; it names each server name (DNS or IP) plus
    localhost and 127.0.0.1, for serverAuth, and ends with the intermediate (not a year later)."""
    paths = PkiPaths.from_dir(pki_dir)
    chain = load_certificates(paths.server_pem)
    assert len(chain) == 2 and chain[1] == ca.certificate
    cert = chain[0]
    assert load_certificate(paths.server_pem) == cert
    cert.verify_directly_issued_by(ca.certificate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["helpline.example.org", "localhost"]
    assert sorted(str(ip) for ip in san.get_values_for_type(x509.IPAddress)) == ["127.0.0.1", "192.0.2.10"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.not_valid_after_utc == ca.not_after
    verifier = (PolicyBuilder().store(Store([ca.root])).time(NOW)
                .build_server_verifier(x509.DNSName("helpline.example.org")))
    assert verifier.verify(cert, chain[1:])[-1] == ca.root


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    """A second init in the same directory raises PkiExistsError and leaves the PKI untouched."""
    paths = init_pki(tmp_path, ["a.example"], now=NOW)
    before = paths.ca_pem.read_bytes()
    with pytest.raises(PkiExistsError):
        init_pki(tmp_path, ["a.example"], now=NOW)
    assert paths.ca_pem.read_bytes() == before


def test_init_refuses_if_any_single_file_exists(tmp_path: Path) -> None:
    """Even one leftover PKI file (here intermediate.key, or an old ca.key) blocks init without force."""
    (tmp_path / "intermediate.key").write_bytes(b"old")
    with pytest.raises(PkiExistsError, match=r"intermediate\.key"):
        init_pki(tmp_path, [], now=NOW)
    assert not (tmp_path / "ca.pem").exists()
    (tmp_path / "intermediate.key").unlink()
    (tmp_path / "ca.key").write_bytes(b"old")
    with pytest.raises(PkiExistsError, match=r"ca\.key"):
        init_pki(tmp_path, [], now=NOW)


def test_init_force_replaces(tmp_path: Path, permissive_umask: None) -> None:
    """With force, init replaces the PKI with a new root and keeps keys 0600."""
    first = CertificateAuthority.load(init_pki(tmp_path, [], now=NOW).directory).fingerprint_sha256
    paths = init_pki(tmp_path, [], now=NOW, force=True)
    second = CertificateAuthority.load(paths.directory).fingerprint_sha256
    assert first != second
    assert _mode(paths.intermediate_key) == 0o600


def test_fingerprint_is_sha256_of_root_der(ca: CertificateAuthority, root: RootCA) -> None:
    """fingerprint_sha256 (node side and root side) is the lowercase hex SHA-256 of the root certificate DER."""
    import hashlib

    der = root.certificate.public_bytes(serialization.Encoding.DER)
    assert ca.fingerprint_sha256 == root.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    assert ca.fingerprint_sha256 != certificate_fingerprint_sha256(ca.certificate)


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
    assert validate_device_certificate(cert, ca.root, now=NOW, intermediates=ca.chain) == "dev-42"


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


def _validate(cert: x509.Certificate, ca: CertificateAuthority, now: datetime = NOW) -> str:
    """Validate against the root, with the intermediate as the device presents it."""
    return validate_device_certificate(cert, ca.root, now=now, intermediates=ca.chain)


def test_chain_verifies_to_the_root_only_with_the_intermediate(ca: CertificateAuthority,
                                                              device_cert: x509.Certificate) -> None:
    """A device certificate verifies up to the root through its intermediate; without it, it does not."""
    assert _validate(device_cert, ca) == "dev-9"
    with pytest.raises(CertValidationError):
        validate_device_certificate(device_cert, ca.root, now=NOW)


def test_validation_accepts_naive_utc_now(ca: CertificateAuthority, device_cert: x509.Certificate) -> None:
    """A naive `now` is taken as UTC."""
    naive = NOW.replace(tzinfo=None) + timedelta(days=1)
    assert _validate(device_cert, ca, naive) == "dev-9"


def test_validation_fails_after_expiry(ca: CertificateAuthority, device_cert: x509.Certificate) -> None:
    """One second past not_after the certificate is rejected."""
    later = device_cert.not_valid_after_utc + timedelta(seconds=1)
    assert _validate(device_cert, ca, later - timedelta(seconds=2))
    with pytest.raises(CertValidationError, match="not valid at validation time"):
        _validate(device_cert, ca, later)


def test_validation_fails_before_not_before(ca: CertificateAuthority, device_cert: x509.Certificate) -> None:
    """Before not_before (now - 5 min) the certificate is rejected."""
    with pytest.raises(CertValidationError):
        _validate(device_cert, ca, NOW - timedelta(minutes=6))


def test_device_cert_from_another_node_of_the_same_root_is_accepted(root: RootCA, ca: CertificateAuthority) -> None:
    """Two nodes, two intermediates of one root: each one's device certificates verify against the root."""
    node_b = root.new_intermediate(["b.example.org"], now=NOW)
    assert node_b.certificate != ca.certificate and node_b.root == ca.root
    cert = node_b.sign_device_csr(build_csr(generate_device_key()), "dev-b", now=NOW)
    assert validate_device_certificate(cert, ca.root, now=NOW, intermediates=node_b.chain) == "dev-b"
    assert not ca.issued(cert) and node_b.issued(cert)


def test_validation_fails_for_other_root(ca: CertificateAuthority, device_cert: x509.Certificate) -> None:
    """A cert under another root (same names, same device id) is rejected, in both directions."""
    other = RootCA.create(now=NOW).new_intermediate(["helpline.example.org", "192.0.2.10"], now=NOW)
    assert other.root.subject == ca.root.subject
    with pytest.raises(CertValidationError):
        validate_device_certificate(device_cert, other.root, now=NOW, intermediates=ca.chain)
    foreign = other.sign_device_csr(build_csr(generate_device_key()), "dev-9", now=NOW)
    assert _validate(foreign, other) == "dev-9"
    with pytest.raises(CertValidationError):
        validate_device_certificate(foreign, ca.root, now=NOW, intermediates=other.chain)
    with pytest.raises(CertValidationError):  # nor by offering this root's intermediate beside it
        validate_device_certificate(foreign, ca.root, now=NOW, intermediates=[*other.chain, *ca.chain])


def test_device_cert_capped_at_the_intermediate_and_none_after_it(ca: CertificateAuthority) -> None:
    """A device certificate never outlives its intermediate; once the intermediate expired, it issues nothing."""
    late = ca.not_after - timedelta(days=10)
    cert = ca.sign_device_csr(build_csr(generate_device_key()), "dev-late", now=late)
    assert cert.not_valid_after_utc == ca.not_after
    assert cert.not_valid_after_utc - late == timedelta(days=10)  # not the 30 days asked for
    assert _validate(cert, ca, ca.not_after - timedelta(seconds=1)) == "dev-late"
    with pytest.raises(IssuerExpiredError, match="rotate"):
        ca.sign_device_csr(build_csr(generate_device_key()), "dev-late", now=ca.not_after)


def test_intermediate_cannot_make_another_ca(pki_dir: Path, ca: CertificateAuthority) -> None:
    """Path length 0: a CA the node's intermediate key signs, and everything under it, is refused."""
    inter_key = load_private_key(PkiPaths.from_dir(pki_dir).intermediate_key)
    assert isinstance(inter_key, ec.EllipticCurvePrivateKey)
    rogue = RootCA.create(now=NOW, common_name="rogue")
    rogue_ca_cert = (
        x509.CertificateBuilder()
        .subject_name(rogue.certificate.subject)
        .issuer_name(ca.certificate.subject)
        .public_key(rogue.certificate.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=5))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(rogue.certificate.extensions.get_extension_for_class(x509.KeyUsage).value, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(rogue.certificate.public_key()),  # type: ignore[arg-type]
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(inter_key.public_key()), critical=False)
        .sign(inter_key, hashes.SHA256())
    )
    rogue_ca = CertificateAuthority(rogue.certificate, rogue._key, rogue.certificate)
    leaf = rogue_ca.sign_device_csr(build_csr(generate_device_key()), "dev-rogue", now=NOW)
    with pytest.raises(CertValidationError, match="path length"):
        validate_device_certificate(leaf, ca.root, now=NOW, intermediates=[rogue_ca_cert, ca.certificate])


def test_server_cert_for_another_name_fails_the_name_constraints(ca: CertificateAuthority) -> None:
    """The intermediate can sign a server certificate for any name, but one outside its constraints never verifies."""
    key = generate_device_key()
    rogue = ca.issue_server_certificate(key.public_key(), ["bank.example"], now=NOW)
    verifier = PolicyBuilder().store(Store([ca.root])).time(NOW).build_server_verifier(x509.DNSName("bank.example"))
    with pytest.raises(VerificationError, match="name constraint"):
        verifier.verify(rogue, list(ca.chain))


def test_server_cert_is_not_a_device_cert(pki_dir: Path, ca: CertificateAuthority) -> None:
    """A serverAuth-only certificate from the same CA does not pass as a device certificate."""
    server = load_certificate(PkiPaths.from_dir(pki_dir).server_pem)
    with pytest.raises(CertValidationError):
        _validate(server, ca)


def test_ca_certs_are_not_device_certs(ca: CertificateAuthority) -> None:
    """Neither the intermediate nor the root is accepted as a device (end-entity) certificate."""
    for cert in (ca.certificate, ca.root):
        with pytest.raises(CertValidationError):
            _validate(cert, ca)


def test_device_id_falls_back_to_cn(ca: CertificateAuthority) -> None:
    """Without a device SAN URI, the device id comes from the subject CN."""
    assert device_id_from_certificate(ca.root) == "Helpline Org TLS Root"


def test_cert_errors_share_a_base() -> None:
    """Every certs error is a CertError."""
    for cls in (CsrError, PkiExistsError, CertValidationError, RootKeyError, RootKeyOnServerError,
                IssuerExpiredError):
        assert issubclass(cls, CertError)


def test_check_issued_chain(ca: CertificateAuthority) -> None:
    """What a device stores after enrollment or renewal: its own key's certificate, chaining to its pinned root."""
    key = generate_device_key()
    cert = ca.sign_device_csr(build_csr(key), "dev-c", now=NOW)
    assert check_issued_chain(ca.chain_pem(cert), ca.root, key.public_key()) == cert
    with pytest.raises(CertValidationError, match="this device's key"):
        check_issued_chain(ca.chain_pem(cert), ca.root, generate_device_key().public_key())
    with pytest.raises(CertValidationError):  # the leaf alone does not reach the root
        check_issued_chain(cert.public_bytes(serialization.Encoding.PEM), ca.root, key.public_key())
    with pytest.raises(CertValidationError):
        check_issued_chain(ca.chain_pem(cert), RootCA.create(now=NOW).certificate, key.public_key())


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
    ca_key = load_private_key(PkiPaths.from_dir(pki_dir).intermediate_key)
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
        _validate(cert, ca)


# --------------------------------------------------------------------------- a node's directory, rotation


def test_rotation_replaces_the_intermediate_and_old_device_certs_still_verify(tmp_path: Path) -> None:
    """A new intermediate of the same root goes into the node's directory without force; device certificates
    of the old one still verify (with their chain) until they expire, and the server certificate is new."""
    init_pki(tmp_path / "pki", ["a.example"], now=NOW, root_out=tmp_path / "root", passphrase=PASSPHRASE)
    old = CertificateAuthority.load(tmp_path / "pki")
    old_device = old.sign_device_csr(build_csr(generate_device_key()), "dev-1", now=NOW + timedelta(days=25))
    later = NOW + timedelta(days=41)  # past two-thirds of the old one's 60 days
    new = RootCA.load(tmp_path / "root", PASSPHRASE).new_intermediate(["a.example"], now=later)
    install_intermediate(tmp_path / "pki", new, ["a.example"], now=later)
    loaded = CertificateAuthority.load(tmp_path / "pki")
    assert loaded.certificate == new.certificate and loaded.not_after == later + timedelta(days=60)
    assert load_certificates(PkiPaths.from_dir(tmp_path / "pki").server_pem)[1] == new.certificate
    assert validate_device_certificate(old_device, loaded.root, now=later, intermediates=old.chain) == "dev-1"
    assert not loaded.issued(old_device)
    # Another root's intermediate does not silently replace this one.
    foreign = RootCA.create(now=later).new_intermediate(["a.example"], now=later)
    with pytest.raises(PkiExistsError):
        install_intermediate(tmp_path / "pki", foreign, ["a.example"], now=later)


def test_intermediate_lifetime_is_bounded(root: RootCA) -> None:
    """An intermediate lives at most 90 days."""
    assert root.new_intermediate([], now=NOW, lifetime=timedelta(days=90)).not_after == NOW + timedelta(days=90)
    with pytest.raises(ValueError, match="at most 90"):
        root.new_intermediate([], now=NOW, lifetime=timedelta(days=91))


def test_node_dir_holding_the_root_key_is_refused(pki_dir: Path, root_dir: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """check_node_pki passes a node's directory, and refuses it once the root's key is in it, under any name."""
    node = tmp_path / "node"
    shutil.copytree(pki_dir, node)
    check_node_pki(node)
    shutil.copy(root_dir / "ca.key", node / "ca.key")
    with pytest.raises(RootKeyOnServerError, match=r"ca\.key"):
        check_node_pki(node)
    (node / "ca.key").rename(node / "backup.pem")
    with pytest.raises(RootKeyOnServerError, match=r"backup\.pem"):
        check_node_pki(node)
    with caplog.at_level(logging.WARNING):
        check_node_pki(node, allow_root_key=True)
    assert "allow_root_key_on_server" in caplog.text


def test_node_dir_holding_a_signing_key_it_does_not_use_is_refused(pki_dir: Path, tmp_path: Path) -> None:
    """A private key beside the node's own two (an old installation's Ed25519 grant.key) stops the server:
    a server holds no key that could sign anything but its TLS traffic and device certificates."""
    node = tmp_path / "node"
    shutil.copytree(pki_dir, node)
    check_node_pki(node)
    old = ed25519.Ed25519PrivateKey.generate()
    (node / "grant.key").write_bytes(old.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    with pytest.raises(RootKeyOnServerError, match=r"grant\.key.*trust adopt"):
        check_node_pki(node)
    with pytest.raises(RootKeyOnServerError, match=r"grant\.key"):
        check_node_pki(node, allow_root_key=True)  # the pre-intermediate allowance covers the CA key only


def test_old_layout_loads_as_its_own_root_and_is_flagged(tmp_path: Path) -> None:
    """A directory from before intermediates (an unencrypted CA key beside ca.pem) loads as a CA that is its
    own root, issuing leaves with no chain; check_node_pki flags its key, under any name."""
    root = RootCA.create(now=NOW)
    paths = PkiPaths.from_dir(tmp_path)
    (tmp_path / "ca.pem").write_bytes(root.certificate.public_bytes(serialization.Encoding.PEM))
    write_private_key(paths.ca_key, root._key)
    legacy = CertificateAuthority.load(tmp_path)
    assert legacy.is_root and legacy.chain == () and legacy.fingerprint_sha256 == root.fingerprint_sha256
    cert = legacy.sign_device_csr(build_csr(generate_device_key()), "dev-old", now=NOW)
    assert validate_device_certificate(cert, root.certificate, now=NOW) == "dev-old"
    assert root_key_files(tmp_path) == [paths.ca_key]
    paths.ca_key.rename(tmp_path / "old.key")
    assert root_key_files(tmp_path) == [tmp_path / "old.key"]


def test_expiry_warning_from_two_thirds_of_the_intermediates_life(ca: CertificateAuthority) -> None:
    """No warning before two-thirds of the intermediate's life, a warning naming its end after, and 'expired' at it."""
    start, end = ca.certificate.not_valid_before_utc, ca.not_after
    two_thirds = start + (end - start) * 2 / 3
    assert expiry_warning(ca.certificate, NOW) is None
    assert expiry_warning(ca.certificate, two_thirds - timedelta(seconds=1)) is None
    warning = expiry_warning(ca.certificate, two_thirds)
    assert warning is not None and end.isoformat() in warning and "helpline certs intermediate" in warning
    assert "expired" in (expiry_warning(ca.certificate, end) or "")


def test_pki_status_lists_root_intermediate_and_server(pki_dir: Path, ca: CertificateAuthority) -> None:
    """pki_status shows each certificate's end and when to rotate; states change with the injected now."""
    rows = {row.role: row for row in pki_status(pki_dir)}
    assert list(rows) == ["root", "intermediate", "server"]
    assert rows["intermediate"].not_after == ca.not_after == rows["server"].not_after
    assert rows["root"].sha256 == ca.fingerprint_sha256
    assert rows["intermediate"].state(NOW) == "ok"
    assert rows["intermediate"].state(NOW + timedelta(days=41)) == "rotate now"
    assert rows["intermediate"].state(ca.not_after) == "EXPIRED"
    assert rows["root"].state(ca.not_after) == "ok"
