"""The one-time hand-over from the old server-held grant key to the org root (pure, no I/O).

Before issue 11 every agent pinned ``grant.pub`` at enrollment: the public half of a key the
server itself held (``pki/grant.key``). Agents enrolled that way have no root pin. To move them
to the org root without touching each device, an administrator runs ``helpline trust adopt`` once,
on the workstation where the old key was copied to: the old key signs a :class:`LegacyHandoverBody`
naming the new root, and the key is then destroyed. An agent that has ``grant.pub`` and no pin
accepts the new root from that statement exactly once, deletes ``grant.pub`` and never honours
the old key again.

The statement is Ed25519 over :data:`DOMAIN` + SHA-256 of the canonical body. The old key only ever
signed grant JSON (starting with ``{``) and script statements (``helpline-script-v1``), so no earlier
signature can be taken for a hand-over.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Final

import msgspec

from . import limits
from .authority import B64, Hex64, RootInfo, Timestamp, b64decode, fingerprint

#: What every hand-over signature covers first (NUL-terminated, like the other authority domains).
DOMAIN: Final[bytes] = b"helpline-authority-v1/legacy_handover\x00"


class LegacyHandoverBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The old grant key names the org root agents enrolled under it are to pin from now on."""

    #: The old grant key's raw Ed25519 public key (32 bytes, base64): agents compare it with their grant.pub.
    legacy_public_key: B64
    #: SHA-256 of those raw bytes, for people to compare.
    legacy_key_sha256: Hex64
    #: The root to pin: its fingerprint is what the agent keeps.
    root: RootInfo
    issued_at: Timestamp

    def __post_init__(self) -> None:
        raw = b64decode(self.legacy_public_key)
        if raw is None or len(raw) != 32:
            raise ValueError("legacy_public_key must be 32 raw Ed25519 bytes in base64")
        if fingerprint(raw) != self.legacy_key_sha256:
            raise ValueError("legacy_key_sha256 is not the SHA-256 of legacy_public_key")


class LegacyHandover(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A :class:`LegacyHandoverBody` in canonical bytes and the old grant key's signature."""

    body: Annotated[str, msgspec.Meta(max_length=limits.MAX_TEXT)]
    signature: B64


def handover_message(body: bytes) -> bytes:
    """The bytes the old grant key signs for ``body``."""
    return DOMAIN + hashlib.sha256(body).digest()
