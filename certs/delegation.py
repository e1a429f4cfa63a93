"""The root's delegation to the node-issuing signer, and the signer's files.

The offline org TLS root signs, about once a year, a **delegation** CA (path length 1, at most
a year, name constraints covering every node's names and the signer's own) for the signer: a
small service on its own host (:mod:`certs.signer_service`). The signer, never a node, holds the
delegation's key (encrypted at rest with a passphrase) and issues each allowed node a
**short-lived intermediate** (48 hours by default, path length 0, limited to that node's names)
for a key the node generated itself. So a node's disk holds hours of authority, the signer's a
year's (and it can refuse a node), the root's ten years (offline).

Chains: a device's or a node's certificate, the node's intermediate, the delegation, the root.
Every check takes an explicit ``now``.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.errors import CertError, CertValidationError, IssuerExpiredError, RootKeyError
from certs.pki import (
    CLOCK_SKEW,
    ROOT_PATH_LENGTH,
    RootCA,
    as_utc,
    ca_builder,
    certificate_serial_hex,
    load_certificate,
    load_encrypted_private_key,
    name_constraints,
    write_certificate,
    write_certificates,
    write_encrypted_private_key,
    write_private_key,
)
from common.files import atomic_write

log = logging.getLogger(__name__)

MAX_DELEGATION_LIFETIME = timedelta(days=366)
#: A node intermediate's default and longest lives under a delegation (hours to days).
NODE_LIFETIME = timedelta(hours=48)
MAX_NODE_LIFETIME = timedelta(days=7)
#: Shortest life the signer issues (tests use minutes; nothing shorter is useful).
MIN_NODE_LIFETIME = timedelta(minutes=1)
#: An enrolment token for a new node is good for this long.
TOKEN_LIFETIME = timedelta(hours=24)
_NODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def check_node_name(node: str) -> str:
    """``node`` if it is a usable node name (in file names, logs and certificate subjects)."""
    if not _NODE_RE.fullmatch(node):
        raise ValueError(f"invalid node name {node!r}: expected 1-63 of [A-Za-z0-9._-]")
    return node


@dataclass(frozen=True)
class SignerPaths:
    """A signer's directory: ``ca.pem`` (the root's certificate), ``delegation.pem`` and ``delegation.key``
    (encrypted), ``signer.pem``/``.key`` (its TLS certificate, issued by the delegation), ``nodes.json``
    (the allow-list) and ``nodes.lock`` (its lock). Never the root's key."""

    directory: Path

    @property
    def ca_pem(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def delegation_pem(self) -> Path:
        return self.directory / "delegation.pem"

    @property
    def delegation_key(self) -> Path:
        return self.directory / "delegation.key"

    @property
    def previous_pem(self) -> Path:
        return self.directory / "delegation-previous.pem"

    @property
    def signer_pem(self) -> Path:
        return self.directory / "signer.pem"

    @property
    def signer_key(self) -> Path:
        return self.directory / "signer.key"

    @property
    def nodes(self) -> Path:
        return self.directory / "nodes.json"

    @property
    def nodes_lock(self) -> Path:
        return self.directory / "nodes.lock"


class DelegationCA:
    """The signer's CA: issues node intermediates (and its own TLS certificate), capped at its own end."""

    def __init__(self, certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey,
                 root: x509.Certificate) -> None:
        if certificate.public_key() != private_key.public_key():
            raise ValueError("the delegation's private key does not match its certificate")
        try:
            certificate.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CertValidationError("the delegation was not issued by the root in ca.pem") from exc
        self.certificate = certificate
        self.root = root
        #: The delegation this one renewed: nodes prove their first renewal under the new one with its intermediates.
        self.previous: x509.Certificate | None = None
        self._key = private_key

    @classmethod
    def load(cls, directory: Path, passphrase: bytes) -> DelegationCA:
        paths = SignerPaths(Path(directory))
        key = load_encrypted_private_key(paths.delegation_key, passphrase)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise RootKeyError(f"{paths.delegation_key}: the delegation's key must be an EC key")
        delegation = cls(load_certificate(paths.delegation_pem), key, load_certificate(paths.ca_pem))
        if paths.previous_pem.exists():
            previous = load_certificate(paths.previous_pem)
            try:
                previous.verify_directly_issued_by(delegation.root)
            except (ValueError, TypeError, InvalidSignature):
                log.warning("ignoring %s: not issued by the root in ca.pem", paths.previous_pem)
            else:
                delegation.previous = previous
        return delegation

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    def _builder(self, now: datetime, lifetime: timedelta) -> tuple[datetime, datetime]:
        now = as_utc(now)
        if now >= self.not_after:
            raise IssuerExpiredError(f"the delegation expired at {self.not_after.isoformat()}: "
                                     "renew it with the offline root (helpline certs delegate)")
        return now - CLOCK_SKEW, min(now + lifetime, self.not_after)

    def issue_node_intermediate(self, public_key: ec.EllipticCurvePublicKey, node: str, server_names: list[str],
                                *, now: datetime, lifetime: timedelta = NODE_LIFETIME) -> x509.Certificate:
        """A node's intermediate (path length 0, limited to ``server_names``) for the key the node generated."""
        if not MIN_NODE_LIFETIME <= lifetime <= MAX_NODE_LIFETIME:
            raise ValueError(f"a node intermediate lives {MIN_NODE_LIFETIME} to {MAX_NODE_LIFETIME}")
        not_before, not_after = self._builder(now, lifetime)
        cert = self._sign(ca_builder(f"Helpline node {check_node_name(node)} {as_utc(now):%Y-%m-%dT%H:%M}",
                                     public_key, server_names, not_before=not_before, not_after=not_after,
                                     path_length=0))
        log.info("issued node intermediate node=%s serial=%s until %s", node, certificate_serial_hex(cert),
                 not_after.isoformat())
        return cert

    def issue_signer_certificate(self, public_key: ec.EllipticCurvePublicKey, host: str, *,
                                 now: datetime) -> x509.Certificate:
        """The signer's own TLS server certificate (until the delegation's end)."""
        not_before, not_after = self._builder(now, MAX_DELEGATION_LIFETIME)
        return self._sign(
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_signer_san(host), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))

    def _sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.issuer_name(self.certificate.subject).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
        ).sign(self._key, hashes.SHA256())

    def issued(self, cert: x509.Certificate) -> bool:
        """True if this delegation, or the one it renewed, signed ``cert`` (a node's current intermediate)."""
        for issuer in (self.certificate, self.previous):
            if issuer is None:
                continue
            try:
                cert.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return True
        return False


def _signer_san(host: str) -> x509.SubjectAlternativeName:
    try:
        return x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))])
    except ValueError:
        return x509.SubjectAlternativeName([x509.DNSName(host.lower())])


def permits(constraints: x509.NameConstraints, name: str) -> bool:
    """True if ``name`` (a host name or IP address) lies in ``constraints``' permitted subtrees."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        host = name.lower()
        return any(isinstance(e, x509.DNSName) and (host == e.value or host.endswith("." + e.value))
                   for e in constraints.permitted_subtrees or [])
    return any(isinstance(e, x509.IPAddress) and isinstance(e.value, ipaddress.IPv4Network | ipaddress.IPv6Network)
               and ip in e.value for e in constraints.permitted_subtrees or [])


def create_delegation(root: RootCA, signer_dir: Path, *, signer_host: str, server_names: list[str],
                      passphrase: bytes, now: datetime, lifetime: timedelta, force: bool = False) -> DelegationCA:
    """With the (offline) root, write a signer's directory: the delegation (its key encrypted with the
    signer's ``passphrase``), the signer's TLS certificate for ``signer_host`` and an empty allow-list."""
    if root.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length != \
            ROOT_PATH_LENGTH:
        raise CertError("this root was made with path length 1 (before delegation): it certifies node "
                        "intermediates directly (helpline certs intermediate) and cannot delegate")
    if not timedelta(0) < lifetime <= MAX_DELEGATION_LIFETIME:
        raise ValueError(f"a delegation lives at most {MAX_DELEGATION_LIFETIME.days} days")
    paths = SignerPaths(Path(signer_dir))
    renewal = False
    if paths.delegation_pem.exists():
        old = load_certificate(paths.delegation_pem)
        renewal = load_certificate(paths.ca_pem) == root.certificate if paths.ca_pem.exists() else False
        if not renewal and not force:
            raise CertError(f"refusing to overwrite {paths.delegation_pem} (another root's): use --force")
    now = as_utc(now)
    key = ec.generate_private_key(ec.SECP256R1())
    names = [signer_host, *server_names]
    cert = root.sign_ca(ca_builder(f"Helpline node signer {signer_host} {now:%Y-%m-%d}", key.public_key(), names,
                                   not_before=now - CLOCK_SKEW,
                                   not_after=min(now + lifetime, root.certificate.not_valid_after_utc),
                                   path_length=1))
    delegation = DelegationCA(cert, key, root.certificate)
    paths.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.directory.chmod(0o700)
    if renewal:  # the nodes' current intermediates (from the old one) still prove their next renewal
        write_certificate(paths.previous_pem, old)
    write_encrypted_private_key(paths.delegation_key, key, passphrase)
    write_certificate(paths.delegation_pem, cert)
    write_certificate(paths.ca_pem, root.certificate)
    tls_key = ec.generate_private_key(ec.SECP256R1())
    write_private_key(paths.signer_key, tls_key)
    write_certificates(paths.signer_pem, [delegation.issue_signer_certificate(tls_key.public_key(), signer_host,
                                                                              now=now), cert])
    with nodes_locked(paths):
        if not paths.nodes.exists():
            save_nodes(paths, {})
    log.info("delegation for signer %s until %s", signer_host, delegation.not_after.isoformat())
    return delegation


def signer_root_key_files(directory: Path) -> list[Path]:
    """Files in a signer's directory holding the root's private key (by name, or by an unencrypted key whose
    public half is the root's). The signer's own encrypted ``delegation.key`` is expected there."""
    from certs.node import root_key_files  # the node's scan; minus the delegation's encrypted key

    paths = SignerPaths(Path(directory))
    # bus-ca.key is encrypted too; certs/bus_renewal.load_bus_ca refuses it if it decrypts to the root's key.
    expected = {paths.delegation_key, paths.directory / "bus-ca.key"}
    return [p for p in root_key_files(paths.directory) if p not in expected]


# --------------------------------------------------------------------------- the allow-list


@dataclass
class NodeEntry:
    """One node the signer may issue to: its names, its intermediate's life, how it proves itself."""

    server_names: list[str]
    lifetime_s: float
    #: Serials of the node's current and previous intermediate: a renewal is proven with one of their keys.
    serials: list[str] = field(default_factory=list)
    #: SHA-256 of a one-time enrolment token (a new node, or one whose intermediate expired), and its end.
    token_sha256: str | None = None
    token_expires: float = 0.0
    #: Its NATS node id and its bus key's SPKI SHA-256 (``certs signer bus-node``): the bus certificate the
    #: signer renews with the intermediate is for this id and this key only (certs/bus_renewal.py).
    bus_node: str | None = None
    bus_spki: str | None = None

    def token_matches(self, token: str, now: float) -> bool:
        if self.token_sha256 is None or now >= self.token_expires:
            return False
        return hmac.compare_digest(self.token_sha256, hashlib.sha256(token.encode()).hexdigest())


def load_nodes(paths: SignerPaths) -> dict[str, NodeEntry]:
    """The allow-list (a node removed from it can no longer renew)."""
    raw = json.loads(paths.nodes.read_text())
    return {check_node_name(name): NodeEntry(**entry) for name, entry in raw.items()}


@contextmanager
def nodes_locked(paths: SignerPaths) -> Iterator[None]:
    """Hold the allow-list's lock (``flock`` on ``nodes.lock``) around a read-modify-write of ``nodes.json``.

    The signer (renewals) and ``certs signer add-node``/``remove-node`` (other processes) all rewrite the file:
    without it a removal made during a renewal is overwritten (the node stays allowed), or a new token lost.
    ``nodes.json`` itself is replaced atomically, so plain readers need no lock.
    """
    fd = os.open(paths.nodes_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
        yield
    finally:
        os.close(fd)


def save_nodes(paths: SignerPaths, nodes: dict[str, NodeEntry]) -> None:
    """Replace ``nodes.json`` atomically (call under :func:`nodes_locked` after reading it)."""
    atomic_write(paths.nodes, json.dumps({n: asdict(e) for n, e in sorted(nodes.items())}, indent=2), 0o600)


def new_token() -> tuple[str, str]:
    """A one-time enrolment token and its SHA-256 (the token is random, 256 bits: a plain hash suffices)."""
    token = secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


def allow_node(paths: SignerPaths, node: str, server_names: list[str], lifetime: timedelta, *,
               now: float, record: Callable[[], object] | None = None) -> str:
    """Add ``node`` (or renew its token) on the allow-list; return its one-time enrolment token. ``record`` (the
    audit record) runs under the lock before the change is saved: if it fails, nothing changes."""
    if not MIN_NODE_LIFETIME <= lifetime <= MAX_NODE_LIFETIME:
        raise ValueError(f"a node intermediate lives {MIN_NODE_LIFETIME} to {MAX_NODE_LIFETIME}")
    name_constraints(server_names)  # refuse unusable names now, not at the node's first renewal
    allowed = load_certificate(paths.delegation_pem).extensions.get_extension_for_class(x509.NameConstraints).value
    outside = [n for n in server_names if not permits(allowed, n.strip())]
    if outside:
        raise ValueError(f"the delegation does not cover {', '.join(outside)}: add them with helpline certs delegate "
                         "--server-name (with the root) first")
    token, digest = new_token()
    with nodes_locked(paths):
        nodes = load_nodes(paths)
        # No serials: a new token is how a node whose key may be stolen is re-enrolled, so no intermediate
        # issued before it proves a renewal any more (the thief's included); the node joins with the token.
        before = nodes.get(node)  # a new token keeps the bus binding (re-keying the bus is 'certs nats' + bus-node)
        nodes[check_node_name(node)] = NodeEntry(list(server_names), lifetime.total_seconds(), [], digest,
                                                 now + TOKEN_LIFETIME.total_seconds(),
                                                 before.bus_node if before else None,
                                                 before.bus_spki if before else None)
        if record is not None:
            record()
        save_nodes(paths, nodes)
    return token


def bind_bus(paths: SignerPaths, node: str, bus_node: str, bus_spki: str,
             record: Callable[[], object] | None = None) -> bool:
    """Bind ``node``'s bus identity (NATS node id, key pin) on the allow-list; False if the node is not on it.
    ``record`` as for :func:`allow_node`."""
    with nodes_locked(paths):
        nodes = load_nodes(paths)
        entry = nodes.get(node)
        if entry is None:
            return False
        entry.bus_node, entry.bus_spki = bus_node, bus_spki
        if record is not None:
            record()
        save_nodes(paths, nodes)
    return True


def remove_node(paths: SignerPaths, node: str, record: Callable[[], object] | None = None) -> bool:
    """Take ``node`` off the allow-list: its next renewal is refused. True if it was there. ``record`` as for
    :func:`allow_node`."""
    with nodes_locked(paths):
        nodes = load_nodes(paths)
        if nodes.pop(node, None) is None:
            return False
        if record is not None:
            record()
        save_nodes(paths, nodes)
    return True


def node_chain(cert: x509.Certificate, delegation: DelegationCA) -> list[x509.Certificate]:
    """What a node installs as ``intermediate.pem``: its intermediate, then the delegation."""
    return [cert, delegation.certificate]


def chain_of(pem: bytes) -> list[x509.Certificate]:
    """Parse a PEM chain (``CertValidationError`` if it is not one)."""
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertValidationError(f"not a PEM certificate chain: {exc}") from exc


__all__ = ["DelegationCA", "NodeEntry", "SignerPaths", "allow_node", "bind_bus", "chain_of", "create_delegation",
           "load_nodes", "node_chain", "nodes_locked", "permits", "remove_node", "save_nodes",
           "signer_root_key_files"]
