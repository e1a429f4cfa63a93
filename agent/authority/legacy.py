"""The one-time upgrade of an agent enrolled before the org root existed.

Such an agent pinned ``grant.pub`` at enrollment — the public half of the key the server held —
and has no root pin, so it honours no unattended document. ``helpline trust adopt`` makes the old
key sign, once, a hand-over naming the org root (:mod:`protocol.legacy`); the server relays it
with the root. This agent takes the root from it **once**: the signature must verify with *its*
``grant.pub``, the root's fingerprint becomes the pin (kept in ``agent.json`` like ``enroll
--root-sha256``), and ``grant.pub`` is deleted. From then on the device has a pin, so no hand-over
is looked at again and the old key authorizes nothing, ever: a copy of it left on a server or in a
backup can neither move the pin nor sign anything the device honours.

An agent that has a pin (configured or adopted) deletes a ``grant.pub`` it still finds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from certs.errors import CertError
from protocol.legacy import LegacyHandover

from .audit import DeviceAudit

log = logging.getLogger(__name__)


class LegacyKey:
    """The old grant key's public half on this device, and the one thing it may still do."""

    def __init__(self, path: Path, *, keep_pin: Callable[[str], None], audit: DeviceAudit) -> None:
        self.path = path
        self._keep_pin = keep_pin
        self._audit = audit
        #: Why the last hand-over was refused ("" when none was).
        self.problem = ""

    def present(self) -> bool:
        return self.path.exists()

    def adopt(self, handover: LegacyHandover) -> str | None:
        """Take the root ``handover`` names, if the old key signed it: keep its fingerprint as the pin,
        delete the old key, and return the pin. None (audited) when the hand-over does not verify."""
        from certs.legacy import decode_handover, load_legacy_public_key, verify_handover

        try:
            raw = load_legacy_public_key(self.path.read_bytes())
        except (OSError, CertError) as exc:
            self._refuse(f"this device's grant.pub is unusable: {exc}")
            return None
        root = verify_handover(handover, legacy_public_key=raw)
        if isinstance(root, str):
            self._refuse(root)
            return None
        body = decode_handover(handover)
        assert not isinstance(body, str)
        self._keep_pin(root.fingerprint)
        self._audit.record("root.adopted", pin=root.fingerprint, root_name=root.name,
                           legacy_key_sha256=body.legacy_key_sha256,
                           reason="the grant key this device was enrolled with handed over to this root (once)")
        log.warning("adopted trust root %s from the old grant key's hand-over", root.fingerprint)
        self.retire("the hand-over was taken; the old grant key authorizes nothing on this device any more")
        return root.fingerprint

    def _refuse(self, reason: str) -> None:
        if reason != self.problem:  # the server relays it with every update: audited once per reason
            self._audit.record("root.handover_refused", reason=reason)
            log.error("refused the hand-over to a new trust root: %s", reason)
        self.problem = reason

    def retire(self, reason: str) -> None:
        """Delete ``grant.pub`` (audited) so the old key can never be used again."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("could not delete the old grant key %s: %s", self.path, exc)
            self._audit.record("legacy_key.kept", reason=f"could not delete grant.pub: {exc}")
            return
        self._audit.record("legacy_key.removed", reason=reason)
        log.info("deleted the old grant key %s: %s", self.path, reason)
