"""Enrollment tokens and CSR signing.

A token is ``hlt_<id>.<secret>``: the id finds the row, the 128-bit secret is checked
against its stored SHA-256 (the secret has full entropy, so a slow hash adds nothing).
Tokens expire, carry a use count (single-use by default) and bind the device to a group.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from certs.errors import CsrError, IssuerExpiredError
from certs.pki import CertificateAuthority, certificate_serial_hex
from common.hashing import hash_secret, verify_secret

from . import audit, devices, recovery
from .errors import ApiError
from .store import Database

TOKEN_PREFIX = "hlt_"  # noqa: S105 - a format prefix, not a secret


@dataclass(frozen=True)
class CreatedToken:
    token: str
    token_id: str
    group: str
    expires_at: float
    uses: int


async def create_token(db: Database, *, group: str, ttl_s: float, uses: int, actor: str) -> CreatedToken:
    if uses < 1:
        raise ValueError("uses must be at least 1")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)  # 192 bits
    expires = time.time() + ttl_s
    async with db.transaction() as tx:
        await devices.ensure_group(tx, group)
        await tx.execute(
            "INSERT INTO enrollment_tokens (id, token_hash, group_name, created_at, expires_at, uses_left, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (token_id, hash_secret(secret), group, time.time(), expires, uses, actor),
        )
        await audit.append_in(tx, actor, "token.create", token_id, {"group": group, "uses": uses, "ttl_s": ttl_s})
    return CreatedToken(f"{TOKEN_PREFIX}{token_id}.{secret}", token_id, group, expires, uses)


def _split(token: str) -> tuple[str, str]:
    if not token.startswith(TOKEN_PREFIX) or "." not in token or len(token) > 200:
        raise ApiError(401, "invalid_token", "enrollment token is not valid")
    token_id, secret = token[len(TOKEN_PREFIX):].split(".", 1)
    return token_id, secret


@dataclass(frozen=True)
class Enrolled:
    device_id: str
    group: str
    #: The device certificate followed by the issuing intermediate (PEM).
    certificate_pem: str
    not_after: float


async def enroll(
    db: Database, ca: CertificateAuthority, *, token: str, csr_pem: str, lifetime: timedelta, peer: str
) -> Enrolled:
    """Consume the token and sign the CSR in one transaction and audit it. A refusal raises
    :class:`ApiError` and changes nothing; the caller audits refusals (rate-limited and aggregated,
    since anyone can send them: :mod:`server.audit_limits`)."""
    token_id, secret = _split(token)
    device_id = str(uuid.uuid4())
    async with db.transaction() as tx:
        row = await tx.fetchone("SELECT * FROM enrollment_tokens WHERE id = ?", (token_id,))
        if row is None or not verify_secret(secret, row["token_hash"]):
            raise ApiError(401, "invalid_token", "enrollment token is not valid")
        if row["expires_at"] < time.time():
            raise ApiError(401, "token_expired", "enrollment token has expired")
        if row["uses_left"] < 1:
            raise ApiError(401, "token_used", "enrollment token has already been used")
        try:
            cert = ca.sign_device_csr(csr_pem.encode(), device_id, now=datetime.now(UTC), lifetime=lifetime)
        except CsrError as exc:
            raise ApiError(400, "bad_csr", f"certificate request refused: {exc}") from exc
        except IssuerExpiredError as exc:
            raise ApiError(503, "issuer_expired", "the server's issuing certificate has expired") from exc
        updated = await tx.execute(
            "UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE id = ? AND uses_left > 0", (token_id,)
        )
        if updated != 1:
            raise ApiError(401, "token_used", "enrollment token has already been used")
        not_after = cert.not_valid_after_utc.timestamp()
        await devices.register(tx, device_id, row["group_name"], certificate_serial_hex(cert), not_after)
        await recovery.record_certificate(tx, device_id, cert)  # recovery compares the whole certificate
        await audit.append_in(tx, "enrollment", "device.enroll", device_id,
                              {"token_id": token_id, "group": row["group_name"], "peer": peer})
    # The chain (device certificate, then this node's intermediate): the agent presents it whole, so
    # any node of the same root can verify it.
    return Enrolled(device_id, row["group_name"], ca.chain_pem(cert).decode(), not_after)
