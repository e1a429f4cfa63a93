"""Storing bearer secrets (enrollment tokens, console and API session tokens, tunnel tokens).

The database keeps only a digest: whoever reads it cannot use what they read. The secrets are
long random strings (≥ 192 bits), so a plain SHA-256 is enough; a slow password hash would only
cost time on every request. Passwords are not secrets of this kind: see server/accounts/passwords.py.
"""

from __future__ import annotations

import hashlib
import hmac


def hash_secret(secret: str) -> str:
    """The hex SHA-256 digest of ``secret`` that is stored (and looked up) instead of it."""
    return hashlib.sha256(secret.encode()).hexdigest()


def verify_secret(secret: str, stored_hash: str) -> bool:
    """Does ``secret`` match ``stored_hash``? Compared in constant time."""
    return hmac.compare_digest(hash_secret(secret).encode(), stored_hash.encode())
