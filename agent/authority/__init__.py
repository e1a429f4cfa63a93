"""Authority a compromised server cannot forge, on the device: the pin, what verified, the device audit.

:mod:`.store` keeps the org root (pinned at install), certificates, the revocation list and the
signed documents that verified, and makes every check unattended work needs; :mod:`.scope` holds
the pure scope rules (this device, this action, this window); :mod:`.audit` is the device's own
hash-chained audit log; :mod:`.feature` takes ``authority.update`` from the control channel;
:mod:`.legacy` is the one-time hand-over of a device enrolled under the old server-held grant key.
:func:`build` makes the store for an agent's state directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import AgentConfig
from ..policy import LocalPolicy
from ..state import AgentState
from .audit import DeviceAudit
from .legacy import LegacyKey
from .store import AuthorityStore, GrantCheck, parse_pin

__all__ = ["AuthorityStore", "DeviceAudit", "GrantCheck", "audit_path", "build", "configured_pin", "parse_pin"]

log = logging.getLogger(__name__)

#: The key in ``agent.json`` where ``helpline agent enroll --root-sha256`` stores the pin.
PIN_INFO_KEY = "trust_root_sha256"


def audit_path(state: AgentState) -> Path:
    """``<state>/device-audit.jsonl``: the device's own audit log."""
    return state.directory / "device-audit.jsonl"


def configured_pin(state: AgentState, config: AgentConfig) -> str | None:
    """The pin: the configuration's (what the administrator deploys) or, failing that, the enrollment's.

    A malformed fingerprint is logged and treated as no pin: nothing unattended is honoured.
    """
    raw = config.trust_root_sha256 or str(state.load_info().get(PIN_INFO_KEY) or "") or None
    try:
        return parse_pin(raw)
    except ValueError as exc:
        log.error("trust root fingerprint %r unusable; unattended access is refused: %s", raw, exc)
        return None


def keep_pin(state: AgentState, pin: str) -> None:
    """Store ``pin`` in ``agent.json`` as ``enroll --root-sha256`` does (the hand-over of an old agent)."""
    info = state.load_info()
    info[PIN_INFO_KEY] = pin
    state.save_info(info)


def build(state: AgentState, config: AgentConfig) -> AuthorityStore:
    """The authority store and device audit of an enrolled agent (with its old grant key, if it has one), under
    the ``[authority]`` rules of the local policy file.

    Raises :class:`agent.policy.PolicyError` when that file is unusable or would loosen a default: the agent
    does not start on rules other than the ones its administrator wrote.
    """
    policy = LocalPolicy.load_strict(config.policy_file).authority
    if policy != LocalPolicy().authority:
        log.info("the local policy tightens the authority rules", extra={"policy": repr(policy)})
    audit = DeviceAudit(audit_path(state))
    legacy = LegacyKey(state.legacy_grant_pub_path, keep_pin=lambda pin: keep_pin(state, pin), audit=audit)
    return AuthorityStore(state.directory / "authority", pin=configured_pin(state, config), device_id=state.device_id,
                          group=lambda: str(state.load_info().get("group", "")), audit=audit, policy=policy,
                          legacy=legacy)
