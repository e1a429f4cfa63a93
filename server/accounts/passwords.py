"""Password hashing with scrypt at OWASP parameters (N=2**17, r=8, p=1: 128 MiB, ~0.3 s).

Hashes are self-describing (``scrypt$N$r$p$salt$hash``, base64) so parameters can be raised
later; :func:`needs_rehash` says when. Hashing runs in a thread, at most
:data:`MAX_CONCURRENT` at once, so a burst of logins cannot exhaust memory or the loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets

from ..errors import ApiError

N, R, P = 2**17, 8, 1
DKLEN = 32
#: scrypt needs 128*N*r bytes; allow a little headroom over OpenSSL's 32 MiB default.
MAXMEM = 128 * N * R + 16 * 1024 * 1024
MAX_CONCURRENT = 2
#: The shortest password a person may choose (generated ones are longer).
MIN_LENGTH = 12
MAX_LENGTH = 1024
#: The semaphore and the event loop it belongs to (an asyncio primitive must not cross loops).
_slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
#: A valid hash of a random password: verifying against it costs the same as a real check,
#: so unknown usernames are not revealed by timing.
_DUMMY: str | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _kdf(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * n * r + 16 * 1024 * 1024,
                          dklen=DKLEN)


def hash_password(password: str) -> str:
    """Blocking: the encoded scrypt hash of ``password`` with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(_kdf(password, salt, N, R, P))}"


def verify_password(password: str, encoded: str) -> bool:
    """Blocking: constant-time check of ``password`` against an encoded hash."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _kdf(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(encoded: str) -> bool:
    return not encoded.startswith(f"scrypt${N}${R}${P}$")


def generate_password() -> str:
    """A random password to show once (about 120 bits, easy to type)."""
    return "-".join(secrets.token_urlsafe(6) for _ in range(4))


def check_new_password(new: str, *, current: str | None = None, username: str = "") -> None:
    """A password a person chooses: 12-1024 characters, not the current one, not the username."""
    if len(new) < MIN_LENGTH:
        raise ApiError(400, "weak_password", f"the new password needs at least {MIN_LENGTH} characters")
    if len(new) > MAX_LENGTH:
        raise ApiError(400, "weak_password", f"the new password may have at most {MAX_LENGTH} characters")
    if current is not None and new == current:
        raise ApiError(400, "weak_password", "the new password must differ from the current one")
    if username and new.strip().lower() == username.lower():
        raise ApiError(400, "weak_password", "the new password must not be the username")


def _semaphore() -> asyncio.Semaphore:
    global _slots
    loop = asyncio.get_running_loop()
    if _slots is None or _slots[0] is not loop:
        _slots = (loop, asyncio.Semaphore(MAX_CONCURRENT))
    return _slots[1]


async def hash_password_async(password: str) -> str:
    async with _semaphore():
        return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password: str, encoded: str | None) -> bool:
    """Verify in a thread; with ``encoded=None`` burn the same time and return False."""
    global _DUMMY
    async with _semaphore():
        if encoded is None:
            if _DUMMY is None:
                _DUMMY = await asyncio.to_thread(hash_password, secrets.token_hex(16))
            await asyncio.to_thread(verify_password, password, _DUMMY)
            return False
        return await asyncio.to_thread(verify_password, password, encoded)
