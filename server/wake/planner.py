"""Which online agent can wake a sleeping device, and on which networks (pure; no I/O).

From the CMDB's ``network`` inventory section of each device (interfaces with a MAC and IPv4
addresses with netmasks): the sleeping device's wakeable MACs and IPv4 networks, and for each
candidate relay its own networks. A relay qualifies when it shares at least one network with
the target (a magic packet is a link-local broadcast); the broadcast addresses are those shared
networks'. Loopback, link-local and /31-/32 networks are nobody's neighbourhood.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.wake import MAX_BROADCASTS, MAX_MACS, normalize_mac


@dataclass(frozen=True)
class WakePlan:
    relay: str
    macs: list[str]
    broadcasts: list[str]


def networks(section: Any) -> set[ipaddress.IPv4Network]:
    """The IPv4 networks of a device's interfaces (what a broadcast there reaches)."""
    found: set[ipaddress.IPv4Network] = set()
    for interface in _interfaces(section):
        for address in interface.get("ipv4") or []:
            if not isinstance(address, dict):
                continue
            try:
                network = ipaddress.IPv4Interface(f"{address.get('address')}/{address.get('netmask')}").network
            except ValueError:
                continue
            if not (network.is_loopback or network.is_link_local or network.prefixlen >= 31):
                found.add(network)
    return found


def macs(section: Any) -> list[str]:
    """The unicast MACs of a device's interfaces that have an IPv4 network (the wired/wireless NICs)."""
    found: list[str] = []
    for interface in _interfaces(section):
        if not interface.get("ipv4") or not isinstance(interface.get("mac"), str):
            continue
        try:
            mac = normalize_mac(interface["mac"])
        except ValueError:
            continue
        if mac not in found:
            found.append(mac)
    return found[:MAX_MACS]


def plan(target: Any, relays: Mapping[str, Any]) -> WakePlan | None:
    """The relay sharing the most networks with ``target`` (ties: the smallest device id), or None."""
    target_networks, target_macs = networks(target), macs(target)
    if not target_networks or not target_macs:
        return None
    best: tuple[int, str, list[str]] | None = None
    for relay_id in sorted(relays):
        shared = sorted(target_networks & networks(relays[relay_id]))
        if shared and (best is None or len(shared) > best[0]):
            best = (len(shared), relay_id, [str(n.broadcast_address) for n in shared][:MAX_BROADCASTS])
    if best is None:
        return None
    return WakePlan(best[1], target_macs, best[2])


def _interfaces(section: Any) -> list[dict[str, Any]]:
    if not isinstance(section, dict) or not isinstance(section.get("interfaces"), list):
        return []
    return [i for i in section["interfaces"] if isinstance(i, dict)]
