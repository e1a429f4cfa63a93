"""The agent's book of unattended-access grants: stored, verified, checked — locally.

Grants arrive over the control channel (``grant.push``) but are trusted only after their
Ed25519 signature verifies with the org grant key pinned at enrollment
(``state.grant_pub_path``): a compromised relay can neither invent nor stretch one.
Revocations are remembered for good. The book lives in ``<state dir>/grants.json`` and is
re-verified when loaded. Used by remote sessions and by tasks.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from certs.errors import CertError, GrantSignatureError
from common.files import atomic_write
from protocol.grants import Action, Decision, Grant, SignedGrant, evaluate, window_end

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)


def _verify(public_key: Ed25519PublicKey, signed: SignedGrant) -> Grant:
    # Imported on first use: an idle agent without grants never loads cryptography.
    from certs.grants import verify_grant

    return verify_grant(public_key, signed)

_signed_decoder = msgspec.json.Decoder(list[SignedGrant])


@dataclass(frozen=True)
class GrantMatch:
    """A check's outcome, with the grant that allowed it (None when refused)."""

    decision: Decision
    grant: Grant | None = None


class GrantBook:
    def __init__(self, directory: Path, device_id: str, public_key: Ed25519PublicKey | None) -> None:
        self.path = directory / "grants.json"
        self.device_id = device_id
        self.public_key = public_key
        self._signed: dict[str, SignedGrant] = {}
        self._grants: dict[str, Grant] = {}
        self.revoked: set[str] = set()
        self._load()

    @classmethod
    def for_state(cls, directory: Path, device_id: str, grant_pub_path: Path) -> GrantBook:
        """The book of an enrolled agent; without a pinned key every grant is refused."""
        from certs.grants import load_grant_public_key

        key: Ed25519PublicKey | None = None
        try:
            key = load_grant_public_key(grant_pub_path.read_bytes())
        except (OSError, CertError, ValueError) as exc:
            log.error("no usable grant public key at %s; unattended access is refused: %s", grant_pub_path, exc)
        return cls(directory, device_id, key)

    # --- changes ------------------------------------------------------------------------

    def add(self, signed: SignedGrant) -> Grant:
        """Verify and store a pushed grant; raises GrantSignatureError for a forged/tampered one."""
        if self.public_key is None:
            raise GrantSignatureError("this agent has no pinned grant key")
        grant = _verify(self.public_key, signed)
        self._signed[grant.grant_id] = signed
        self._grants[grant.grant_id] = grant
        self._save()
        return grant

    def revoke(self, grant_id: str) -> bool:
        """Remember a revocation (also for grants not seen yet); True if it was new."""
        new = grant_id not in self.revoked
        self.revoked.add(grant_id)
        self._signed.pop(grant_id, None)
        self._grants.pop(grant_id, None)
        self._save()
        return new

    def get(self, grant_id: str) -> Grant | None:
        return self._grants.get(grant_id)

    def grants(self) -> list[Grant]:
        return list(self._grants.values())

    # --- checks -------------------------------------------------------------------------

    def check(self, action: Action, technician: str, role: str, group: str, now: float, local: datetime,
              *, grant_id: str | None = None) -> Decision:
        """May ``technician`` (with ``role``) do ``action`` here now, under some (or the named) grant?"""
        return self.match(action, technician, role, group, now, local, grant_id=grant_id).decision

    def match(self, action: Action, technician: str, role: str, group: str, now: float, local: datetime,
              *, grant_id: str | None = None) -> GrantMatch:
        if grant_id is not None:
            if grant_id in self.revoked:
                return GrantMatch(Decision(False, "grant has been revoked"))
            grant = self._grants.get(grant_id)
            if grant is None:
                return GrantMatch(Decision(False, f"no valid grant {grant_id!r} on this device"))
            candidates = [grant]
        else:
            candidates = list(self._grants.values())
        if not candidates:
            return GrantMatch(Decision(False, "no grant on this device"))
        refusal = Decision(False, "no grant allows this")
        for grant in candidates:
            decision = evaluate(grant, device_id=self.device_id, group=group, technician=technician, role=role,
                                action=action, now=now, local=local, revoked=grant.grant_id in self.revoked)
            if decision.allowed:
                return GrantMatch(decision, grant)
            refusal = decision
        return GrantMatch(refusal)

    @staticmethod
    def ends_at(grant: Grant, now: float, local: datetime) -> float:
        """Epoch seconds at which a session under ``grant`` must end (expiry or window end)."""
        end = grant.not_after
        closes = window_end(grant, local)
        if closes is not None:
            end = min(end, now + (closes - local).total_seconds())
        return end

    # --- storage ------------------------------------------------------------------------

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            signed = _signed_decoder.decode(json.dumps(data.get("grants", [])).encode())
            self.revoked = {str(g) for g in data.get("revoked", [])}
        except (OSError, ValueError, msgspec.ValidationError, msgspec.DecodeError, AttributeError) as exc:
            log.error("grant book %s unreadable; starting empty: %s", self.path, exc)
            return
        for item in signed:
            try:
                grant = _verify(self.public_key, item) if self.public_key is not None else None
            except GrantSignatureError as exc:
                log.error("stored grant failed verification and is dropped: %s", exc)
                continue
            if grant is not None and grant.grant_id not in self.revoked:
                self._signed[grant.grant_id] = item
                self._grants[grant.grant_id] = grant

    def _save(self) -> None:
        data = {"grants": [msgspec.to_builtins(s) for s in self._signed.values()], "revoked": sorted(self.revoked)}
        atomic_write(self.path, json.dumps(data, indent=1), 0o600)
