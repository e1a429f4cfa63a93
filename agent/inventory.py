"""The device inventory: every collector's section, per-section checksums and the delta to send.

The agent sends the full inventory once; afterwards it sends only sections whose checksum
differs from the ones the server acknowledged. A checksum is the SHA-256 of the section's
canonical JSON, so agent and server compute the same value from the same data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec

from agent.collectors.accounts import collect_accounts
from agent.collectors.controllers import collect_controllers
from agent.collectors.dns import collect_dns
from agent.collectors.hardware import collect_battery, collect_cpu, collect_disks, collect_displays, collect_memory
from agent.collectors.identity import collect_identity
from agent.collectors.logins import collect_logins
from agent.collectors.network import collect_network
from agent.collectors.os_info import collect_os
from agent.collectors.security import collect_security
from agent.collectors.software import installed_software
from agent.collectors.storage import collect_storage
from agent.collectors.users import collect_users
from agent.collectors.virtualization import collect_virtualization
from protocol.messages import InventoryPolicy as WirePolicy
from protocol.messages import Welcome

log = logging.getLogger(__name__)

SECTIONS = (
    "identity",
    "os",
    "cpu",
    "memory",
    "disks",
    "network",
    "battery",
    "displays",
    "software",
    "users",
    "security",
    "storage",
    "controllers",
    "virtualization",
    "dns",
    "accounts",
    "logins",
)

#: Sections holding personal data (local accounts, login history): a device group can switch them off.
PERSONAL_SECTIONS = frozenset({"accounts", "logins"})

COLLECTORS: dict[str, Callable[[], Any]] = {
    "identity": collect_identity,
    "os": collect_os,
    "cpu": collect_cpu,
    "memory": collect_memory,
    "disks": collect_disks,
    "network": collect_network,
    "battery": collect_battery,
    "displays": collect_displays,
    "software": installed_software,
    "users": collect_users,
    "security": collect_security,
    "storage": collect_storage,
    "controllers": collect_controllers,
    "virtualization": collect_virtualization,
    "dns": collect_dns,
    "accounts": collect_accounts,
    "logins": collect_logins,
}


@dataclass(frozen=True, slots=True)
class InventoryPolicy:
    """What the server lets this agent collect (``welcome.inventory_policy``, from the device's group).

    ``omit``: sections not to collect at all (personal data switched off); ``login_days``: how far back
    login history goes (the server's retention). The default, for servers that send no policy, is
    to collect everything with the collectors' own window.
    """

    omit: frozenset[str] = frozenset()
    login_days: int | None = None


def welcome_policy(welcome: Welcome | None) -> InventoryPolicy:
    """The policy a server's welcome carries; none (an older server, no connection yet) collects everything."""
    return wire_policy(welcome.inventory_policy if welcome is not None else msgspec.UNSET)


def wire_policy(sent: WirePolicy | msgspec.UnsetType) -> InventoryPolicy:
    """The policy a server sent (welcome or ``inventory.request``); unset collects everything."""
    if isinstance(sent, msgspec.UnsetType):
        return InventoryPolicy()
    return InventoryPolicy(omit=frozenset(sent.omit), login_days=sent.login_days)


def policy_collectors(policy: InventoryPolicy, collectors: Mapping[str, Callable[[], Any]] = COLLECTORS
                      ) -> dict[str, Callable[[], Any]]:
    """The collectors to run under ``policy``: omitted sections dropped, login history windowed."""
    chosen = {name: fn for name, fn in collectors.items() if name not in policy.omit}
    days = policy.login_days
    if days is not None and chosen.get("logins") is collect_logins:
        chosen["logins"] = lambda: collect_logins(days)
    return chosen


def _run(name: str, collector: Callable[[], Any]) -> Any:
    """One collector; a crash becomes an error section instead of losing the whole inventory."""
    try:
        return collector()
    except Exception as exc:
        log.exception("inventory collector %r failed", name)
        return {"error": f"{type(exc).__name__}: {exc}", "unavailable": {name: "collector failed"}}


def collect_inventory(collectors: Mapping[str, Callable[[], Any]] = COLLECTORS, *, workers: int = 4,
                      policy: InventoryPolicy | None = None) -> dict[str, Any]:
    """Run the collectors concurrently (most wait on files or subprocesses) → {section: data} in SECTIONS order."""
    if policy is not None:
        collectors = policy_collectors(policy, collectors)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inventory") as pool:
        futures = {name: pool.submit(_run, name, fn) for name, fn in collectors.items()}
        results = {name: future.result() for name, future in futures.items()}
    ordered = {name: results[name] for name in SECTIONS if name in results}
    ordered.update({name: value for name, value in results.items() if name not in ordered})
    return ordered


def canonical_json(value: Any) -> bytes:
    """The one serialisation checksums are computed on: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def section_checksums(inv: Mapping[str, Any]) -> dict[str, str]:
    """SHA-256 hex of each section's canonical JSON."""
    return {name: hashlib.sha256(canonical_json(data)).hexdigest() for name, data in inv.items()}


def compute_delta(inv: Mapping[str, Any], acked_checksums: Mapping[str, str] | None) -> dict[str, Any]:
    """Sections whose checksum differs from the acknowledged ones; all sections when nothing was acked."""
    if acked_checksums is None:
        return dict(inv)
    current = section_checksums(inv)
    return {name: inv[name] for name, digest in current.items() if acked_checksums.get(name) != digest}
