"""What the server accepts as inventory: known sections, their shapes and size limits.

Agent data is hostile input. A report is validated completely before anything is written,
so a bad report changes nothing: every section must fit its typed schema
(:mod:`.schemas`: field types, string and list limits, no unknown fields) and a size limit.
Checksums are recomputed here with the agent's canonical JSON (sorted keys, no spaces, UTF-8)
so both ends agree on what "unchanged" means.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .schemas import SCHEMAS, SectionInvalid, check_section

#: Sections the server stores (keep in step with ``agent.inventory.SECTIONS``; a test checks).
KNOWN_SECTIONS = tuple(SCHEMAS)

#: Largest canonical JSON per section, in bytes.
MAX_SECTION_BYTES = 256 * 1024
MAX_SOFTWARE_BYTES = 3 * 1024 * 1024


class InventoryRejected(Exception):
    """The report is refused as a whole; ``str(exc)`` says why (sent back to the agent)."""

    code = "invalid"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def checksum(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def validate_report(full: bool, sections: Mapping[str, Any], checksums: Mapping[str, str]) -> None:
    """Raise :class:`InventoryRejected` unless the report is well-formed and self-consistent."""
    unknown = sorted((set(sections) | set(checksums)) - set(KNOWN_SECTIONS))
    if unknown:
        raise InventoryRejected(f"unknown sections: {', '.join(unknown)}")
    missing = sorted(set(sections) - set(checksums))
    if missing:
        raise InventoryRejected(f"sections without a checksum: {', '.join(missing)}")
    if full and set(sections) != set(checksums):
        raise InventoryRejected("a full report must carry every section it has a checksum for")
    for name, data in sections.items():
        size = len(canonical_json(data))
        limit = MAX_SOFTWARE_BYTES if name == "software" else MAX_SECTION_BYTES
        if size > limit:
            raise InventoryRejected(f"section {name!r} is {size} bytes (limit {limit})")
        try:
            check_section(name, data)
        except SectionInvalid as exc:
            raise InventoryRejected(str(exc)[:512]) from None  # names a peer-chosen key: keep it short
        if checksum(data) != checksums[name]:
            raise InventoryRejected(f"checksum of section {name!r} does not match its content")


def summary(sections: Mapping[str, Any]) -> dict[str, str]:
    """The few fields the device list shows: os, ip, serial, model (empty when unknown)."""
    out: dict[str, str] = {}
    os_data = sections.get("os")
    if isinstance(os_data, dict):
        out["os"] = str(os_data.get("pretty_name") or " ".join(
            str(os_data.get(k)) for k in ("name", "version") if os_data.get(k)))[:255]
    identity = sections.get("identity")
    if isinstance(identity, dict):
        out["serial"] = str(identity.get("serial") or "")[:255]
        out["model"] = str(identity.get("model") or "")[:255]
    network = sections.get("network")
    if isinstance(network, dict):
        out["ip"] = _primary_ip(network.get("interfaces"))
    return out


def _primary_ip(interfaces: Any) -> str:
    if not isinstance(interfaces, list):
        return ""
    candidates = [i for i in interfaces if isinstance(i, dict)]
    candidates.sort(key=lambda i: (not i.get("is_default_route"), not i.get("is_up")))
    for iface in candidates:
        for addr in iface.get("ipv4") or []:
            if isinstance(addr, dict) and isinstance(addr.get("address"), str) and \
                    not addr["address"].startswith("127."):
                return str(addr["address"])[:64]
    return ""
