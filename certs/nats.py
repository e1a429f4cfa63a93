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

import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.pki import (
    CLOCK_SKEW,
    as_utc,
    load_certificate,
    load_private_key,
    pem_chain,
    private_key_pem,
)
from common.files import atomic_write, atomic_write_all

CA_LIFETIME = timedelta(days=3650)
#: The NATS server's and the bucket administrator's certificates (neither sits on a Helpline node).
LEAF_LIFETIME = timedelta(days=365)
#: A node's bus certificate from ``certs nats``: no longer than a hand-made intermediate (60 days, at most 90),
#: so a node's disk holds nothing long-lived; renewed for the same key with :func:`renew_nodes`.
NODE_LIFETIME = timedelta(days=60)
MAX_NODE_LIFETIME = timedelta(days=90)
#: The object store's bucket (server/storage/objects.BUCKET; repeated so this module needs no server import).
BUCKET = "helpline-artifacts"
#: A node id as it appears in subjects (server/bus/connection.node_name keeps only these characters).
_NODE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
CA_NAME = "Helpline NATS bus CA"
#: Where the NATS host keeps the files of ``<dir>/server/`` (the generated config names these paths).
INSTALL_DIR = Path("/etc/nats/helpline")
#: The administrator's NATS user: creates the bucket's stream once, so nodes need no STREAM.CREATE/UPDATE.
ADMIN_UNIT = "helpline-nats-admin"
ADMIN_USER = f"CN=bucket-admin,OU={ADMIN_UNIT}"
ADMIN_INBOX = "_INBOX.helpline-admin"


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
    """The files ``helpline certs nats`` writes into one directory.

    ``ca/`` holds the CA key and the bucket administrator's certificate: it stays on the workstation and
    the config never names it.  ``server/`` is exactly what goes to the NATS host's install directory;
    ``nodes/`` one pair per node; ``ca.pem`` (public) what every node trusts.
    """

    directory: Path

    @property
    def ca_dir(self) -> Path:
        return self.directory / "ca"

    @property
    def ca_pem(self) -> Path:
        return self.ca_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.ca_dir / "ca.key"

    @property
    def admin_pem(self) -> Path:
        return self.ca_dir / "admin.pem"

    @property
    def admin_key(self) -> Path:
        return self.ca_dir / "admin.key"

    @property
    def public_ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_dir(self) -> Path:
        return self.directory / "server"

    @property
    def server_ca(self) -> Path:
        return self.server_dir / "ca.pem"

    @property
    def server_pem(self) -> Path:
        return self.server_dir / "nats-server.pem"

    @property
    def server_key(self) -> Path:
        return self.server_dir / "nats-server.key"

    @property
    def config(self) -> Path:
        return self.server_dir / "nats-server.conf"

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

    @property
    def signing_key(self) -> ec.EllipticCurvePrivateKey:
        """The CA's key (``helpline certs signer bus-ca`` stores it encrypted on the signer)."""
        return self._key

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

    def issue_admin(self, public_key: ec.EllipticCurvePublicKey, *, now: datetime,
                    lifetime: timedelta = LEAF_LIFETIME) -> x509.Certificate:
        """The bucket administrator's clientAuth certificate (user :data:`ADMIN_USER`), kept beside the CA key."""
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ADMIN_UNIT),
                             x509.NameAttribute(NameOID.COMMON_NAME, "bucket-admin")])
        return (self._leaf(subject, public_key, ExtendedKeyUsageOID.CLIENT_AUTH, now=now, lifetime=lifetime)
                .sign(self._key, hashes.SHA256()))

    def issue_node(self, public_key: ec.EllipticCurvePublicKey, node: str, *, now: datetime,
                   lifetime: timedelta = NODE_LIFETIME) -> x509.Certificate:
        """A clientAuth certificate for ``node``; its subject is the node's NATS user (:func:`user_of`)."""
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "helpline-nats-node"),
                             x509.NameAttribute(NameOID.COMMON_NAME, check_node(node))])
        return (self._leaf(subject, public_key, ExtendedKeyUsageOID.CLIENT_AUTH, now=now, lifetime=lifetime)
                .sign(self._key, hashes.SHA256()))


def node_permissions(node: str, *, bucket: str = BUCKET) -> dict[str, object]:
    """What ``node`` may publish and subscribe: Helpline's subjects (server/bus) and the object store's.

    Publish: rings (``helpline.events.>``), presence and live questions, routed requests to any node,
    the join notice, and of JetStream only what the object store uses on the one bucket's stream
    (``OBJ_<bucket>``): STREAM.INFO, STREAM.MSG.GET (metadata, and chunks one by one:
    server/storage/jetstream_read.py) and STREAM.PURGE (an object's old chunks when it is replaced or
    deleted), plus its chunks and metadata (``$O.<bucket>.>``).  No STREAM.CREATE/UPDATE/DELETE (the
    administrator creates the stream: :func:`create_bucket`), so no node can add another node's subjects
    to the stream or remove it; no CONSUMER.* and no DIRECT.GET, because nats-server does not check a
    consumer's delivery subject against its creator's rights and a direct get answers with the raw
    stored message.  Replies to requests it received go through ``allow_responses`` (no blanket
    ``_INBOX.>``).  Subscribe: the same rings and questions, **its own** routed requests only, and its
    own inbox (nats-py's ``inbox_prefix``).
    """
    stream = f"OBJ_{bucket}"
    shared = ["helpline.events.>", "helpline.holder.*", "helpline.live.*", "helpline.nodes.joined"]
    publish = [*shared, "helpline.node.*.session", "helpline.node.*.call",
               f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.MSG.GET.{stream}", f"$JS.API.STREAM.PURGE.{stream}",
               f"$O.{bucket}.>"]
    subscribe = [*shared, f"helpline.node.{node}.session", f"helpline.node.{node}.call", f"{node_inbox(node)}.>"]
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe},
            "allow_responses": {"max": 1, "expires": "2m"}}


def admin_permissions(*, bucket: str = BUCKET) -> dict[str, object]:
    """The bucket administrator: create (and resize) the one stream and read its info, nothing else."""
    stream = f"OBJ_{bucket}"
    return {"publish": {"allow": [f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.UPDATE.{stream}",
                                  f"$JS.API.STREAM.INFO.{stream}"]},
            "subscribe": {"allow": [f"{ADMIN_INBOX}.>"]}}


def spki_pin(cert: x509.Certificate) -> str:
    """nats-server's ``pinned_certs`` entry: hex SHA-256 of the certificate's DER SubjectPublicKeyInfo."""
    return key_pin(cert.public_key())


def key_pin(key: PublicKeyTypes) -> str:
    """Hex SHA-256 of a public key's DER SubjectPublicKeyInfo (:func:`spki_pin` of any certificate for it)."""
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def _user_block(user: str, perms: dict[str, object], *, responses: bool) -> str:
    q = json.dumps
    pub = ", ".join(q(s) for s in perms["publish"]["allow"])  # type: ignore[index]
    sub = ", ".join(q(s) for s in perms["subscribe"]["allow"])  # type: ignore[index]
    extra = '        allow_responses: { max: 1, expires: "2m" }\n' if responses else ""
    return (f"    {{ user: {q(user)}\n"
            f"      permissions: {{\n"
            f"        publish: {{ allow: [{pub}] }}\n"
            f"        subscribe: {{ allow: [{sub}] }}\n"
            f"{extra}"
            f"      }} }}")


def server_config(nodes: Iterable[str], pins: Iterable[str], *, listen: str, store_dir: Path,
                  install_dir: Path = INSTALL_DIR) -> str:
    """nats-server's configuration: TLS with client certificates mapped to users, JetStream, per-node users.

    No user without a certificate (``verify_and_map`` and no ``no_auth_user``), and nobody but these
    users; of those, only the certificates whose keys are in ``pins`` (``pinned_certs``): a replaced
    certificate stops working at nats-server's next reload or restart.  Paths are where the NATS host
    keeps ``server/`` (``install_dir``), never the CA key's.  Values are JSON strings, which
    nats-server's config parser reads as quoted strings.
    """
    q = json.dumps
    users = [_user_block(user_of(node), node_permissions(node), responses=True) for node in nodes]
    users.append(_user_block(ADMIN_USER, admin_permissions(), responses=False))
    pinned = ", ".join(q(p) for p in sorted(set(pins)))
    return (f"# Written by 'helpline certs nats': mutual TLS, one user per Helpline node (README, issue 20).\n"
            f"listen: {q(listen)}\n"
            f"jetstream {{ store_dir: {q(str(store_dir))} }}\n"
            f"tls {{\n"
            f"  cert_file: {q(str(install_dir / 'nats-server.pem'))}\n"
            f"  key_file: {q(str(install_dir / 'nats-server.key'))}\n"
            f"  ca_file: {q(str(install_dir / 'ca.pem'))}\n"
            f"  verify_and_map: true\n"
            f"  pinned_certs: [{pinned}]\n"
            f"  timeout: 2\n"
            f"}}\n"
            f"authorization {{\n  users: [\n" + "\n".join(users) + "\n  ]\n}\n")


def _migrate_layout(paths: BusPaths) -> None:
    """A directory from before ``ca/``: move the CA key (and its certificate) in, so no copy of the
    directory's top level carries it any more."""
    old_key, old_pem = paths.directory / "ca.key", paths.directory / "ca.pem"
    if old_key.exists() and not paths.ca_key.exists():
        atomic_write(paths.ca_pem, old_pem.read_bytes(), 0o644)
        os.replace(old_key, paths.ca_key)


def write_bus(directory: Path, nodes: list[str], server_names: list[str], *, now: datetime, listen: str,
              store_dir: Path, days: int = NODE_LIFETIME.days, server_days: int = LEAF_LIFETIME.days,
              install_dir: Path = INSTALL_DIR) -> BusPaths:
    """The bus CA (made once, reused after), a server certificate, one certificate per node, the config.

    ``days`` is the nodes' certificates' lifetime, ``server_days`` the NATS server's and the bucket
    administrator's (neither is on a node).

    Keys 0600 in 0700 directories; certificates 0644; each key/certificate pair written together
    (atomic_write_all: a failed run leaves the old pair, never a key without its certificate).  Running
    it again keeps the CA and re-keys the server and the named nodes only; the config pins every current
    node certificate, so a node's replaced certificate is refused once nats-server reloads the config.
    """
    for node in nodes:
        check_node(node)
    if not nodes:
        raise ValueError("name at least one node (--node NODE_ID)")
    if len(set(nodes)) != len(nodes):
        raise ValueError("a node is named twice")
    paths = BusPaths(Path(directory))
    for sub in (paths.directory, paths.ca_dir, paths.server_dir, paths.directory / "nodes"):
        sub.mkdir(mode=0o700, parents=True, exist_ok=True)
        sub.chmod(0o700)
    _migrate_layout(paths)
    if paths.ca_key.exists():
        ca = BusCA.load(paths)
    else:
        ca = BusCA.create(now=now)
        # Certificate renamed first, key last: the key's presence (checked above) implies its certificate.
        atomic_write_all([(paths.ca_pem, pem_chain([ca.certificate]), 0o644),
                          (paths.ca_key, private_key_pem(ca._key), 0o600)])
    ca_pem = pem_chain([ca.certificate])
    atomic_write(paths.public_ca, ca_pem, 0o644)
    atomic_write(paths.server_ca, ca_pem, 0o644)
    lifetime, server_lifetime = timedelta(days=days), timedelta(days=server_days)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = ca.issue_server(server_key.public_key(), server_names, now=now, lifetime=server_lifetime)
    atomic_write_all([(paths.server_pem, pem_chain([server_cert]), 0o644),
                      (paths.server_key, private_key_pem(server_key), 0o600)])
    if not paths.admin_key.exists():
        admin_key = ec.generate_private_key(ec.SECP256R1())
        admin_cert = ca.issue_admin(admin_key.public_key(), now=now, lifetime=server_lifetime)
        atomic_write_all([(paths.admin_pem, pem_chain([admin_cert]), 0o644),
                          (paths.admin_key, private_key_pem(admin_key), 0o600)])
    for node in nodes:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = ca.issue_node(key.public_key(), node, now=now, lifetime=lifetime)
        atomic_write_all([(paths.node_pem(node), pem_chain([cert]), 0o644),
                          (paths.node_key(node), private_key_pem(key), 0o600)])
    known = sorted({p.stem for p in (paths.directory / "nodes").glob("*.pem")})
    pins = [spki_pin(load_certificate(p)) for p in [*map(paths.node_pem, known), paths.admin_pem]]
    atomic_write(paths.config, server_config(known, pins, listen=listen, store_dir=store_dir,
                                             install_dir=install_dir), 0o644)
    return paths


def renew_nodes(directory: Path, nodes: list[str], *, now: datetime, days: int = NODE_LIFETIME.days) -> list[Path]:
    """Re-certify each named node's current key (from its ``nodes/<node>.pem``) for ``days``: the written paths.

    Same key, so the config's ``pinned_certs`` stays valid and nats-server needs no reload; the node's
    private key is neither needed nor touched.  Every node is checked before anything is written: one
    that ``certs nats`` never made is refused (``ValueError``).
    """
    if not nodes:
        raise ValueError("name at least one node (--node NODE_ID)")
    paths = BusPaths(Path(directory))
    if not paths.ca_key.exists():
        raise ValueError(f"{paths.ca_key}: no bus CA here (the --dir 'helpline certs nats' wrote)")
    ca = BusCA.load(paths)
    keys: list[tuple[str, ec.EllipticCurvePublicKey]] = []
    for node in dict.fromkeys(nodes):
        pem = paths.node_pem(node)
        if not pem.exists():
            raise ValueError(f"unknown node {node!r}: no {pem} (make its key and certificate with "
                             f"'helpline certs nats --node {node}' first)")
        key = load_certificate(pem).public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError(f"{pem}: not an EC key")
        keys.append((node, key))
    lifetime = timedelta(days=days)
    for node, key in keys:
        atomic_write(paths.node_pem(node), pem_chain([ca.issue_node(key, node, now=now, lifetime=lifetime)]), 0o644)
    return [paths.node_pem(node) for node, _ in keys]


async def create_bucket(paths: BusPaths, url: str, *, replicas: int = 1, bucket: str = BUCKET) -> str:
    """Create the object store's bucket as the administrator (once; nodes may not): "created" or "exists"."""
    import ssl

    import nats
    from nats.js.api import ObjectStoreConfig
    from nats.js.errors import BucketNotFoundError

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(paths.ca_pem))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(paths.admin_pem), str(paths.admin_key))
    client = await nats.connect(url, tls=ctx, inbox_prefix=ADMIN_INBOX, allow_reconnect=False, connect_timeout=10)
    try:
        js = client.jetstream()
        try:
            await js.object_store(bucket)
            return "exists"
        except BucketNotFoundError:
            await js.create_object_store(bucket, ObjectStoreConfig(
                description="Helpline recordings and task artifacts (sealed)", replicas=replicas))
            return "created"
    finally:
        await client.close()
