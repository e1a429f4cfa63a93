"""Signing for the generic webhook, and the check a receiver runs (importable, or re-written from this).

Header ``X-Helpline-Signature: t=<unix seconds>,v1=<hex>`` where ``hex`` is
HMAC-SHA256(secret, ``"<t>." + raw body``). A receiver recomputes it over the raw bytes it
received, compares in constant time, and refuses a ``t`` more than :data:`REPLAY_WINDOW_S`
away from its own clock (so a captured request cannot be replayed later); it drops a repeated
``X-Helpline-Idempotency-Key`` (our retries carry the same key and the same note).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Helpline-Signature"
IDEMPOTENCY_HEADER = "X-Helpline-Idempotency-Key"
REPLAY_WINDOW_S = 300


def _mac(secret: bytes, body: bytes, timestamp: int) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    return f"t={timestamp},v1={_mac(secret, body, timestamp)}"


def verify(secret: bytes, header: str, body: bytes, now: float, window_s: float = REPLAY_WINDOW_S) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its time is within ``window_s`` of ``now``."""
    fields: dict[str, str] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, value)
    try:
        timestamp = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > window_s:
        return False
    return hmac.compare_digest(fields.get("v1", ""), _mac(secret, body, timestamp))
