"""A server node's PKI directory: is it safe to run on, and how long has it left?

A server node must hold only its issuing intermediate, never the org TLS root's key: with
the root's key an intruder could mint a new intermediate (and so a valid chain for any
name the root permits, for ten years). ``check_node_pki`` refuses a directory that holds
it; ``pki_status`` and ``expiry_warning`` say when the intermediate is due for rotation
(from two-thirds of its life, like device certificates). Every check takes ``now``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.errors import RootKeyOnServerError
from certs.pki import (
    PkiPaths,
    as_utc,
    certificate_fingerprint_sha256,
    load_certificate,
    load_certificates,
    renewal_due,
)

log = logging.getLogger(__name__)

#: Larger files are not key files; the scan reads nothing bigger.
_MAX_KEY_FILE = 64 * 1024


def root_key_files(directory: Path) -> list[Path]:
    """Files under ``directory`` that hold, or may hold, the org TLS root's private key.

    That is ``ca.key`` by its name, any passphrase-encrypted private key (only the root's is
    encrypted: a server cannot use one) and any other private key whose public half is the
    root's (the root's certificate being ``ca.pem``).
    """
    paths = PkiPaths.from_dir(directory)
    try:
        root_public = load_certificate(paths.ca_pem).public_key()
    except (OSError, ValueError):
        root_public = None
    found = [paths.ca_key] if paths.ca_key.exists() else []
    for path in _candidate_files(paths.directory):
        if path == paths.ca_key:
            continue
        data = path.read_bytes()
        if b"ENCRYPTED PRIVATE KEY-----" in data:
            found.append(path)
        elif b"PRIVATE KEY-----" in data and root_public is not None:
            try:
                key = serialization.load_pem_private_key(data, password=None)
            except (ValueError, TypeError):
                continue
            if key.public_key() == root_public:
                found.append(path)
    return found


def _candidate_files(directory: Path) -> Iterator[Path]:
    if not directory.is_dir():
        return
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.stat().st_size <= _MAX_KEY_FILE:
            yield path


def foreign_key_files(directory: Path) -> list[Path]:
    """Private keys under ``directory`` that are neither the root's nor the two a server uses (its
    intermediate's and its TLS key) — e.g. a signing key an old installation kept there."""
    paths = PkiPaths.from_dir(directory)
    own = {paths.intermediate_key, paths.server_key, *root_key_files(directory)}
    return [path for path in _candidate_files(paths.directory)
            if path not in own and b"PRIVATE KEY-----" in path.read_bytes()]


def check_node_pki(directory: Path, *, allow_root_key: bool = False) -> None:
    """Raise ``RootKeyOnServerError`` if ``directory`` holds the root's private key or any other
    private key the server does not use (a server holds no key that could sign anything else).

    ``allow_root_key`` lets a directory from before intermediates (the CA's own key in
    ``ca.key``, which it needs to issue) run, with a warning at every start.
    """
    foreign = foreign_key_files(directory)
    if foreign:
        raise RootKeyOnServerError(
            f"the server's PKI directory holds private keys the server does not use "
            f"({', '.join(str(p) for p in foreign)}): move them to the administrator's workstation "
            "(an old installation's grant key is for 'helpline trust adopt' there) and destroy every copy here")
    found = root_key_files(directory)
    if not found:
        return
    names = ", ".join(str(p) for p in found)
    if allow_root_key:
        log.warning("the server's PKI directory holds the root's private key (%s): allowed by "
                    "allow_root_key_on_server; anyone who reads it can mint certificates", names)
        return
    raise RootKeyOnServerError(
        f"the server's PKI directory holds the root's private key or another encrypted CA key such as the "
        f"signer's delegation ({names}): move it offline "
        "(a server needs only its intermediate: helpline certs intermediate), or set "
        "allow_root_key_on_server = true for a directory from before intermediates")


@dataclass(frozen=True)
class CertStatus:
    """One certificate of a PKI directory, for ``helpline certs status`` and the server's log."""

    role: str  # "root", "delegation", "intermediate", "server" or "bus" (the node's NATS client certificate)
    subject: str
    not_before: datetime
    not_after: datetime
    rotate_from: datetime
    sha256: str

    def state(self, now: datetime) -> str:
        now = as_utc(now)
        if now >= self.not_after:
            return "EXPIRED"
        if now < self.not_before:
            return "not yet valid"
        if now >= self.rotate_from:
            return "rotate now"
        return "ok"

    def days_left(self, now: datetime) -> float:
        return (self.not_after - as_utc(now)).total_seconds() / 86400


def _status(role: str, cert: x509.Certificate) -> CertStatus:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return CertStatus(role, cert.subject.rfc4514_string(), start, end, start + (end - start) * 2 / 3,
                      certificate_fingerprint_sha256(cert))


def pki_status(directory: Path) -> list[CertStatus]:
    """The chain in ``directory``, root first: the root, a delegated node's delegation (the signer's), the
    intermediate and the server certificate (those present; a signer's directory: root and delegation)."""
    paths = PkiPaths.from_dir(directory)
    found: list[CertStatus] = []
    if paths.ca_pem.exists():
        found.append(_status("root", load_certificate(paths.ca_pem)))
    if paths.intermediate_pem.exists():
        intermediate, *links = load_certificates(paths.intermediate_pem)
        found.extend(_status("delegation", link) for link in reversed(links))
        found.append(_status("intermediate", intermediate))
    elif (paths.directory / "delegation.pem").exists():
        found.append(_status("delegation", load_certificate(paths.directory / "delegation.pem")))
    if paths.server_pem.exists():
        found.append(_status("server", load_certificate(paths.server_pem)))
    return found


def bus_status(path: Path) -> CertStatus:
    """The node's NATS bus client certificate (``nats_tls_cert``), for ``certs status --bus-cert``."""
    return _status("bus", load_certificate(path))


def expiry_warning(intermediate: x509.Certificate, now: datetime, *, delegated: bool = False) -> str | None:
    """A warning once two-thirds of the intermediate's life has passed at ``now``; None before.

    A ``delegated`` node (``signer.json``) renews by itself from half its life: past two-thirds, renewal
    has been failing."""
    if not renewal_due(intermediate, now):
        return None
    end = intermediate.not_valid_after_utc
    left = end - as_utc(now)
    if delegated:
        return (f"the issuing intermediate expires at {end.isoformat()} ({left.total_seconds() / 3600:.1f} h left) "
                "and renewal from the signer keeps failing: check the signer and this node's place on its "
                "allow-list; once it has expired, join again with a new token (helpline certs join)")
    if left.total_seconds() <= 0:
        return (f"the issuing intermediate expired at {end.isoformat()}: no agent can connect; rotate it "
                "(helpline certs intermediate) and restart the server")
    return (f"the issuing intermediate expires at {end.isoformat()} (in {left.days} days {left.seconds // 3600} h): "
            "rotate it with the offline root (helpline certs intermediate) and restart the server")


def bus_expiry_warning(certificate: x509.Certificate, now: datetime, path: Path) -> tuple[int, str] | None:
    """The bus client certificate's (``nats_tls_cert`` at ``path``) counterpart of :func:`expiry_warning`:
    ``(logging level, message)`` from two-thirds of its life, an error once expired; None before.

    For a node that renews it by hand (``certs nats --renew``, same key, so no pin change); a node that
    joined with ``--bus`` renews it with its intermediate instead."""
    if not renewal_due(certificate, now):
        return None
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    node = str(names[0].value) if names else "NODE_ID"
    end = certificate.not_valid_after_utc
    left = end - as_utc(now)
    remedy = (f"renew it on the administrator's workstation (helpline certs nats --dir NATS_BUS_DIR --renew "
              f"--node {node}), copy nodes/{node}.pem to {path} and restart the server")
    if left.total_seconds() <= 0:
        return logging.ERROR, (f"the NATS bus certificate {path} expired at {end.isoformat()}: nats-server refuses "
                               f"this node; {remedy}")
    return logging.WARNING, (f"the NATS bus certificate {path} expires at {end.isoformat()} "
                             f"(in {left.days} days {left.seconds // 3600} h): {remedy}")
