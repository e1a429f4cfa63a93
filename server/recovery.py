"""Recovery of an expired device certificate (issue 20): what is checked, and the one-time nonces.

On a delegated node a device certificate lives at most 48 h, so a laptop off over a long weekend
comes back with an expired one; it cannot pass the agent listener's mutual TLS and, without this,
would need an administrator to enroll it again. Instead it proves that it still holds the key of
its last certificate (protocol/recovery.py): the server accepts only when

* the chain leads to the org root with every check made — signatures, basic constraints, key
  usage, clientAuth, the ``urn:helpline:device:`` URI naming the claimed device — at the leaf's
  last valid second: only the validity of the leaf and of its issuing intermediate (which ends
  no later, and on a delegated node has long been replaced) is waived; anything above them
  (a delegation, the root) must be valid now;
* the leaf has really expired (an unexpired certificate renews over the control channel);
* the signature by the leaf's key covers a nonce this service handed out, unused and fresh;
* the registry records that very certificate — its serial as the device's current (or pending) one,
  and its DER SHA-256, recorded when it was issued (:func:`record_certificate`), byte for byte — as
  the device's: a key renewed away is refused, so is a revoked or purged device, and so is a leaf
  forged with a serial from the logs under an old intermediate's key (whose validity is waived);
* it expired at most ``[server] device_recovery_days`` ago (0: recovery is off).

Nonces live in the shared database (any node hands them out, any node takes them) and are single use
(consumed before anything else is looked at, so a refused attempt spends its nonce). They are handed out
for any well-formed device id, with no per-device cap: the route is public and device ids are not secret,
so a cap on nonces (or on failed proofs, which anyone can make with a garbage signature) would let anyone
block a device's recovery, and whether a device exists would show. Nothing is guessable here — the
credential is a signature by the device's key — so only the per-address limit of the route applies. That
limit is shared by the nodes too (:class:`AttemptBudget`: each request that passes the node's own in-memory
gate is a row of ``recovery_attempts``), so an address gets one allowance however many nodes the load balancer
spreads it over.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from certs.errors import CsrError
from certs.pki import DEVICE_URI_PREFIX, certificate_serial_hex, csr_public_key
from protocol.recovery import proof_bytes

from . import devices
from .audit_limits import RefusalLimiter
from .errors import ApiError
from .net.limits import address_key
from .store import Database, Row, Transaction

#: A nonce counts this long after it is handed out: the agent asks for it right before using it.
NONCE_TTL_S = 120.0
#: Nonce rows (used or not) are deleted this long after they were made.
KEEP_S = 3600.0
#: Certificates in a presented chain: leaf, intermediate, delegation, and one spare.
MAX_CHAIN_CERTS = 4
#: The per-address limit's window: a request counts against its address this long, on every node.
ATTEMPT_WINDOW_S = 60.0


async def _now(tx: Transaction) -> float:
    """The database's clock on PostgreSQL (one clock for every node's window); this machine's on SQLite, whose file
    only one machine opens."""
    if tx.dialect != "postgresql":
        return time.time()
    row = await tx.fetchone("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now")
    assert row is not None
    return float(row["now"])


async def take_attempt(db: Database, peer: str, limit: int, *, window_s: float = ATTEMPT_WINDOW_S,
                       now: float | None = None) -> float:
    """Take a place in ``peer``'s budget of ``limit`` requests per ``window_s``, shared by every node through the
    database: 0.0 when taken (and recorded), else the seconds until a place frees (nothing recorded).

    Counted and recorded in one transaction, serialized per address (SQLite's writer lock; an advisory lock
    keyed by the address on PostgreSQL), so two nodes cannot both take the last place. The window is read on
    the database's clock (``now`` overrides it, for tests), so nodes whose clocks differ still count one
    window. Old rows are not deleted here (:func:`prune_attempts`)."""
    async with db.transaction() as tx:
        if tx.dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(b"helpline recovery attempts\x00" + peer.encode()).digest()[:8],
                                 "big", signed=True)
            await tx.execute("SELECT pg_advisory_xact_lock(?)", (key,))
        now = await _now(tx) if now is None else now
        rows = await tx.fetchall("SELECT at FROM recovery_attempts WHERE peer = ? AND at >= ? ORDER BY at LIMIT ?",
                                 (peer, now - window_s, limit))
        if len(rows) >= limit:
            return max(0.001, float(rows[0]["at"]) + window_s - now)
        await tx.execute("INSERT INTO recovery_attempts (peer, at) VALUES (?, ?)", (peer, now))
    return 0.0


async def prune_attempts(db: Database, *, window_s: float = ATTEMPT_WINDOW_S, now: float | None = None) -> int:
    """Delete attempts older than twice the window (by the database's clock: a node whose clock runs ahead cannot
    delete rows another node still counts); how many went."""
    async with db.transaction() as tx:
        now = await _now(tx) if now is None else now
        return await tx.execute("DELETE FROM recovery_attempts WHERE at < ?", (now - 2 * window_s,))


@dataclass
class AttemptBudget:
    """The per-address budget as a node applies it: its own in-memory limiter first, then the shared one.

    The local gate (:class:`~server.audit_limits.RefusalLimiter`, per node) answers most refusals without the
    database, so at most nodes × ``limit`` requests per address and window reach it; the shared count
    (:func:`take_attempt`) makes the budget one across nodes. Old rows are pruned at most once a window."""

    limit: int
    window_s: float = ATTEMPT_WINDOW_S
    local: RefusalLimiter | None = None
    _pruned_at: float = -math.inf

    def __post_init__(self) -> None:
        if self.local is None:
            self.local = RefusalLimiter(self.limit, self.window_s, overflow_passes=True)  # the database decides

    async def take(self, db: Database, peer: str) -> float:
        """0.0 when ``peer`` may go on (a place taken), else the seconds until it may."""
        assert self.local is not None
        wait = self.local.reserve(peer)
        if wait:
            return wait
        if time.monotonic() - self._pruned_at >= self.window_s:
            self._pruned_at = time.monotonic()
            await prune_attempts(db, window_s=self.window_s)
        return await take_attempt(db, address_key(peer), self.limit, window_s=self.window_s)  # IPv6 by /64


def refused(code: str, message: str, status: int = 403) -> ApiError:
    return ApiError(status, code, message)


@dataclass(frozen=True)
class Proven:
    """A recovery that passed every check: the device, its expired certificate, how long ago it ended."""

    device_id: str
    serial: str
    expired_s: float


# --------------------------------------------------------------------------- nonces


def _nonce_hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


async def new_nonce(db: Database, device_id: str, peer: str, now: float | None = None) -> str:
    """A fresh nonce for ``device_id``, known or not (the answer must not tell): unknown, revoked or purged
    devices are refused, and audited, when the nonce is used."""
    now = time.time() if now is None else now
    nonce = secrets.token_hex(32)
    async with db.transaction() as tx:
        await tx.execute("DELETE FROM device_recovery_nonces WHERE created_at < ?", (now - KEEP_S,))
        await tx.execute("INSERT INTO device_recovery_nonces (nonce_hash, device_id, created_at, expires_at, peer)"
                         " VALUES (?, ?, ?, ?, ?)", (_nonce_hash(nonce), device_id, now, now + NONCE_TTL_S, peer[:64]))
    return nonce


async def consume_nonce(db: Database, device_id: str, nonce: str, now: float | None = None) -> None:
    """Spend ``nonce`` (handed out for ``device_id``, unused, not expired); 401 ``bad_nonce`` otherwise."""
    now = time.time() if now is None else now
    spent = await db.execute("UPDATE device_recovery_nonces SET used_at = ? WHERE nonce_hash = ? AND device_id = ?"
                             " AND used_at IS NULL AND expires_at >= ?", (now, _nonce_hash(nonce), device_id, now))
    if spent != 1:
        raise refused("bad_nonce", "recovery nonce unknown, used or expired: ask for a new one", 401)


# --------------------------------------------------------------------------- the certificate and the proof


def expired_leaf(chain_pem: str, root: x509.Certificate, device_id: str, now: datetime) -> x509.Certificate:
    """The chain's leaf, once it passes every check but the validity of itself and its issuer (see above)."""
    try:
        certs = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError as exc:
        raise refused("bad_chain", "not a PEM certificate chain", 400) from exc
    if not 2 <= len(certs) <= MAX_CHAIN_CERTS:
        raise refused("bad_chain", "expected the certificate followed by its issuing chain", 400)
    leaf, links = certs[0], certs[1:]
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if now <= end:
        raise refused("not_expired", "this certificate has not expired: it renews over the control channel", 409)
    at = max(start, end - timedelta(seconds=1))
    verifier = PolicyBuilder().store(Store([root])).time(at).build_client_verifier()
    try:
        path = verifier.verify(leaf, links).chain
    except VerificationError as exc:
        raise refused("bad_chain", f"the certificate does not lead to the org root: {exc}") from exc
    for above in path[2:]:  # the delegation, the root: nothing above the leaf's issuer is waived
        if not above.not_valid_before_utc <= now <= above.not_valid_after_utc:
            raise refused("bad_chain", f"{above.subject.rfc4514_string()} in the chain is not valid now")
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise refused("bad_chain", "not a device certificate (extended key usage or device URI missing)") from exc
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise refused("bad_chain", "not a device certificate (no clientAuth)")
    if san.get_values_for_type(x509.UniformResourceIdentifier) != [DEVICE_URI_PREFIX + device_id]:
        raise refused("device_mismatch", "the certificate does not name this device")
    return leaf


def check_proof(leaf: x509.Certificate, *, nonce: str, device_id: str, csr_pem: str, signature_b64: str) -> None:
    """The expired certificate's key signed (nonce, device id, CSR); the CSR is for another, new P-256 key."""
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise refused("bad_chain", "the certificate's key is not ECDSA")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, proof_bytes(nonce, device_id, csr_pem), ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature) as exc:
        raise refused("bad_proof", "the signature is not by this certificate's key over this request") from exc
    try:
        new_key = csr_public_key(csr_pem.encode())
    except CsrError as exc:
        raise refused("bad_csr", f"certificate request refused: {exc}", 400) from exc
    if new_key == key:
        raise refused("same_key", "recovery certifies a new key, not the expired certificate's", 400)


def certificate_hash(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


async def record_certificate(tx: Transaction, device_id: str, cert: x509.Certificate,
                             now: float | None = None) -> None:
    """Remember the hash of a certificate just issued (and recorded in ``devices``) for ``device_id``;
    forget those of its certificates the registry no longer names."""
    now = time.time() if now is None else now
    serial = certificate_serial_hex(cert)
    await tx.execute("DELETE FROM device_certificate_hashes WHERE device_id = ? AND serial = ?", (device_id, serial))
    await tx.execute("INSERT INTO device_certificate_hashes (device_id, serial, sha256, issued_at) VALUES (?, ?, ?, ?)",
                     (device_id, serial, certificate_hash(cert), now))
    await tx.execute("DELETE FROM device_certificate_hashes WHERE device_id = ? AND serial <> ? AND serial NOT IN"
                     " (SELECT cert_serial FROM devices WHERE id = ? AND cert_serial IS NOT NULL"
                     " UNION SELECT pending_cert_serial FROM devices"
                     " WHERE id = ? AND pending_cert_serial IS NOT NULL)", (device_id, serial, device_id, device_id))


async def recorded_hash(db: Database, device_id: str, serial: str) -> str | None:
    row = await db.fetchone("SELECT sha256 FROM device_certificate_hashes WHERE device_id = ? AND serial = ?",
                            (device_id, serial))
    return None if row is None else str(row["sha256"])


def check_registry(row: Row | None, leaf: x509.Certificate, recorded: str | None) -> str:
    """The device exists, is not revoked or purged, and this is its current (or pending) certificate: the
    serial, and the whole certificate by the hash ``recorded`` when it was issued (a serial alone is public)."""
    if row is None:
        raise refused("unknown_device", "no such device")
    if row["status"] == "revoked":
        raise refused("revoked", "this device has been revoked (or purged): enroll it again")
    serial = certificate_serial_hex(leaf)
    if serial not in (row["cert_serial"], row["pending_cert_serial"]):
        raise refused("not_current", "this certificate is not the device's current one (renewed or replaced)")
    if recorded is None or not secrets.compare_digest(recorded, certificate_hash(leaf)):
        raise refused("not_current", "this certificate is not the one issued to the device under this serial")
    return serial


def check_grace(leaf: x509.Certificate, now: datetime, grace_days: int) -> float:
    """Seconds since the leaf expired, if within ``grace_days``; 403 ``past_grace`` beyond."""
    expired_s = (now - leaf.not_valid_after_utc).total_seconds()
    if expired_s > grace_days * 86400:
        raise refused("past_grace", f"the certificate expired more than {grace_days} days ago: enroll it again")
    return expired_s


async def prove(db: Database, root: x509.Certificate, *, device_id: str, nonce: str, chain_pem: str, csr_pem: str,
                signature_b64: str, now: datetime, grace_days: int) -> Proven:
    """Every check, cheapest and most telling first; the nonce is spent before anything else."""
    await consume_nonce(db, device_id, nonce, now.timestamp())
    leaf = expired_leaf(chain_pem, root, device_id, now)
    check_proof(leaf, nonce=nonce, device_id=device_id, csr_pem=csr_pem, signature_b64=signature_b64)
    recorded = await recorded_hash(db, device_id, certificate_serial_hex(leaf))
    serial = check_registry(await devices.get(db, device_id), leaf, recorded)
    return Proven(device_id, serial, check_grace(leaf, now, grace_days))
