"""Tunnel tokens: how the agent's tunnel proves it belongs to the session it names.

The server makes a random token (256 bits) per offer and sends it to the agent inside the
offer; it keeps only the token's SHA-256 (:mod:`common.hashing`), bound to the device and to
the serial of the certificate the offer went to. A token opens one tunnel, once, within
:data:`~protocol.session.TUNNEL_TOKEN_LIFE_S` of the offer (renewed when the answer arrives).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from common.hashing import hash_secret, verify_secret
from protocol.session import TUNNEL_TOKEN_LIFE_S
from server.errors import ApiError


@dataclass
class TunnelToken:
    """What the server keeps of a session's token: its digest and what it is bound to."""

    digest: str
    device_id: str
    cert_serial: str
    expires_at: float
    used: bool = False

    @classmethod
    def issue(cls, device_id: str, cert_serial: str, now: float) -> tuple[str, TunnelToken]:
        """A new token: the secret (for the offer, never stored) and the record kept of it."""
        secret = secrets.token_urlsafe(32)
        return secret, cls(hash_secret(secret), device_id, cert_serial, now + TUNNEL_TOKEN_LIFE_S)

    def renew(self, now: float) -> None:
        """The answer arrived: the agent now has a full token life to open the tunnel."""
        self.expires_at = now + TUNNEL_TOKEN_LIFE_S

    def refusal(self, presented: str, device_id: str, cert_serial: str, now: float) -> ApiError | None:
        """Why ``presented`` (from ``device_id`` with ``cert_serial``) cannot open the tunnel; None if it can."""
        if self.device_id != device_id or self.cert_serial != cert_serial:
            return ApiError(403, "foreign_token", "this session was offered to another device certificate")
        if not verify_secret(presented, self.digest):
            return ApiError(403, "bad_token", "tunnel token does not match")
        return self.spent_refusal(now)

    def spent_refusal(self, now: float) -> ApiError | None:
        """Refusal of a token that was already used or has expired (checked again after waiting)."""
        if self.used:
            return ApiError(403, "token_used", "tunnel token already used")
        if now > self.expires_at:
            return ApiError(403, "token_expired", "tunnel token expired")
        return None
