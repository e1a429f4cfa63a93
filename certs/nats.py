"""The bus's own small PKI and nats-server configuration: mutual TLS and per-node permissions on NATS.

Whoever can publish on NATS is trusted like a node (it can ask a node to offer a session as a
technician id), so the bus denies by default: nats-server requires a client certificate from the
**bus CA** (``verify_and_map``: the certificate's subject names the NATS user), and each node's user
may publish and subscribe only the subjects Helpline uses, its own routed requests included.

Why a CA of its own and not the org TLS root: the org root is what agents pin and what nodes accept
device certificates through, so a CA under it whose key sits with the bus's configuration could mint
certificates agents and nodes trust; and every device holds a clientAuth certificate of the org PKI,
which nats-server must never accept.  The bus CA certifies NATS servers and nodes, nothing else, and
nothing else trusts it.  ECDSA P-256 throughout, ``now`` passed in (certs/pki.py's conventions).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.pki import (
    CLOCK_SKEW,
    as_utc,
    load_certificate,
    load_private_key,
    write_certificate,
    write_certificates,
    write_private_key,
)
from common.files import atomic_write

CA_LIFETIME = timedelta(days=3650)
LEAF_LIFETIME = timedelta(days=365)
#: The object store's bucket (server/storage/objects.BUCKET; repeated so this module needs no server import).
BUCKET = "helpline-artifacts"
#: A node id as it appears in subjects (server/bus/connection.node_name keeps only these characters).
_NODE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
CA_NAME = "Helpline NATS bus CA"


def check_node(node: str) -> str:
    """``node`` if it is a NATS subject token a node id can be (the node's ``node_id``), else ValueError."""
    if not _NODE_RE.fullmatch(node):
        raise ValueError(f"node id {node!r}: use 1-64 letters, digits, '-' or '_' (the node's node_id)")
    return node


def user_of(node: str) -> str:
    """The NATS user a node's certificate maps to (``verify_and_map``: its subject, RFC 2253)."""
    return f"CN={check_node(node)},OU=helpline-nats-node"


def node_inbox(node: str) -> str:
    """The node's reply inbox prefix (server/bus/connection passes it to nats-py): only it may read there."""
    return f"_INBOX.{check_node(node)}"


@dataclass(frozen=True)
class BusPaths:
    """The files ``helpline certs nats`` writes into one directory."""

    directory: Path

    @property
    def ca_pem(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_pem(self) -> Path:
        return self.directory / "nats-server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "nats-server.key"

    @property
    def config(self) -> Path:
        return self.directory / "nats-server.conf"

    def node_pem(self, node: str) -> Path:
        return self.directory / "nodes" / f"{check_node(node)}.pem"

    def node_key(self, node: str) -> Path:
        return self.directory / "nodes" / f"{check_node(node)}.key"


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


class BusCA:
    """The bus CA: self-signed, path length 0, issues the NATS servers' and the nodes' certificates."""

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        if certificate.public_key() != key.public_key():
            raise ValueError("the bus CA's key does not match its certificate")
        self.certificate = certificate
        self._key = key

    @classmethod
    def create(cls, *, now: datetime, lifetime: timedelta = CA_LIFETIME) -> BusCA:
        now = as_utc(now)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + lifetime)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(_key_usage(ca=True), critical=True)
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    @classmethod
    def load(cls, paths: BusPaths) -> BusCA:
        key = load_private_key(paths.ca_key)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{paths.ca_key}: not an EC key")
        return cls(load_certificate(paths.ca_pem), key)

    def _leaf(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey, usage: x509.ObjectIdentifier,
              *, now: datetime, lifetime: timedelta) -> x509.CertificateBuilder:
        now = as_utc(now)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.certificate.subject)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - CLOCK_SKEW)
                .not_valid_after(min(now + lifetime, self.certificate.not_valid_after_utc))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_key_usage(ca=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                               critical=False))

    def issue_server(self, public_key: ec.EllipticCurvePublicKey, names: list[str], *, now: datetime,
                     lifetime: timedelta = LEAF_LIFETIME) -> x509.Certificate:
        """A serverAuth certificate for the NATS server(s) reached as ``names`` (DNS names or IP addresses)."""
        if not names:
            raise ValueError("name the NATS server (--server-name, as the nodes' nats_url says it)")
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name.lower()))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        return (self._leaf(subject, public_key, ExtendedKeyUsageOID.SERVER_AUTH, now=now, lifetime=lifetime)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False).sign(self._key, hashes.SHA256()))

    def issue_node(self, public_key: ec.EllipticCurvePublicKey, node: str, *, now: datetime,
                   lifetime: timedelta = LEAF_LIFETIME) -> x509.Certificate:
        """A clientAuth certificate for ``node``; its subject is the node's NATS user (:func:`user_of`)."""
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "helpline-nats-node"),
                             x509.NameAttribute(NameOID.COMMON_NAME, check_node(node))])
        return (self._leaf(subject, public_key, ExtendedKeyUsageOID.CLIENT_AUTH, now=now, lifetime=lifetime)
                .sign(self._key, hashes.SHA256()))


def node_permissions(node: str, *, bucket: str = BUCKET) -> dict[str, object]:
    """What ``node`` may publish and subscribe: Helpline's subjects (server/bus) and the object store's.

    Publish: rings (``helpline.events.>``), presence and live questions, routed requests to any node,
    the join notice, the JetStream API for the one bucket's stream (``OBJ_<bucket>``) and its chunks
    and metadata (``$O.<bucket>.>``), acks and flow control of its consumers.  Replies to requests it
    received go through ``allow_responses`` (no blanket ``_INBOX.>``).  Subscribe: the same rings and
    questions, **its own** routed requests only, and its own inbox (nats-py's ``inbox_prefix``).
    """
    stream = f"OBJ_{bucket}"
    shared = ["helpline.events.>", "helpline.holder.*", "helpline.live.*", "helpline.nodes.joined"]
    publish = [*shared, "helpline.node.*.session", "helpline.node.*.call",
               "$JS.API.INFO", "$JS.API.STREAM.NAMES", f"$JS.API.STREAM.*.{stream}", f"$JS.API.STREAM.MSG.*.{stream}",
               f"$JS.API.CONSUMER.*.{stream}", f"$JS.API.CONSUMER.*.{stream}.>",
               f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>",
               f"$O.{bucket}.>", f"$JS.ACK.{stream}.>", f"$JS.FC.{stream}.>"]
    subscribe = [*shared, f"helpline.node.{node}.session", f"helpline.node.{node}.call", f"{node_inbox(node)}.>"]
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe},
            "allow_responses": {"max": 1, "expires": "2m"}}


def server_config(paths: BusPaths, nodes: Iterable[str], *, listen: str, store_dir: Path) -> str:
    """nats-server's configuration: TLS with client certificates mapped to users, JetStream, per-node users.

    No user without a certificate (``verify_and_map`` and no ``no_auth_user``), and nobody but these
    users; values are written as JSON strings, which nats-server's config parser reads as quoted strings.
    """
    q = json.dumps
    users = []
    for node in nodes:
        perms = node_permissions(node)
        pub = ", ".join(q(s) for s in perms["publish"]["allow"])  # type: ignore[index]
        sub = ", ".join(q(s) for s in perms["subscribe"]["allow"])  # type: ignore[index]
        users.append(f"    {{ user: {q(user_of(node))}\n"
                     f"      permissions: {{\n"
                     f"        publish: {{ allow: [{pub}] }}\n"
                     f"        subscribe: {{ allow: [{sub}] }}\n"
                     f"        allow_responses: {{ max: 1, expires: \"2m\" }}\n"
                     f"      }} }}")
    return (f"# Written by 'helpline certs nats': mutual TLS, one user per Helpline node (README, issue 20).\n"
            f"listen: {q(listen)}\n"
            f"jetstream {{ store_dir: {q(str(store_dir))} }}\n"
            f"tls {{\n"
            f"  cert_file: {q(str(paths.server_pem.resolve()))}\n"
            f"  key_file: {q(str(paths.server_key.resolve()))}\n"
            f"  ca_file: {q(str(paths.ca_pem.resolve()))}\n"
            f"  verify_and_map: true\n"
            f"  timeout: 2\n"
            f"}}\n"
            f"authorization {{\n  users: [\n" + "\n".join(users) + "\n  ]\n}\n")


def write_bus(directory: Path, nodes: list[str], server_names: list[str], *, now: datetime, listen: str,
              store_dir: Path, days: int = LEAF_LIFETIME.days) -> BusPaths:
    """The bus CA (made once, reused after), a server certificate, one certificate per node, the config.

    Keys 0600 in a 0700 directory; certificates 0644.  Running it again with more ``nodes`` keeps the CA
    (existing nodes' certificates stay valid) and re-issues the server's and the named nodes' certificates.
    """
    for node in nodes:
        check_node(node)
    if not nodes:
        raise ValueError("name at least one node (--node NODE_ID)")
    if len(set(nodes)) != len(nodes):
        raise ValueError("a node is named twice")
    paths = BusPaths(Path(directory))
    (paths.directory / "nodes").mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.directory.chmod(0o700)
    (paths.directory / "nodes").chmod(0o700)
    if paths.ca_key.exists():
        ca = BusCA.load(paths)
    else:
        ca = BusCA.create(now=now)
        write_private_key(paths.ca_key, ca._key)
        write_certificate(paths.ca_pem, ca.certificate)
    lifetime = timedelta(days=days)
    server_key = ec.generate_private_key(ec.SECP256R1())
    write_private_key(paths.server_key, server_key)
    write_certificates(paths.server_pem, [ca.issue_server(server_key.public_key(), server_names, now=now,
                                                          lifetime=lifetime)])
    for node in nodes:
        key = ec.generate_private_key(ec.SECP256R1())
        write_private_key(paths.node_key(node), key)
        write_certificates(paths.node_pem(node), [ca.issue_node(key.public_key(), node, now=now, lifetime=lifetime)])
    known = sorted({p.stem for p in (paths.directory / "nodes").glob("*.pem")})
    atomic_write(paths.config, server_config(paths, known, listen=listen, store_dir=store_dir), 0o644)
    return paths
