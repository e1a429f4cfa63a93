"""What the server accepts as inventory: known sections, their shapes and size limits.

Agent data is hostile input. Every section of a report is validated before anything is written:
it must be a known section, fit its typed schema (:mod:`.schemas`: field types, string and list
limits, no unknown fields) and a size limit, and match its checksum. A section that fails is
refused alone (:func:`split_report`; the server keeps its previous copy) and named in the ack, so
one bad section never holds up the others (issue 12).
Checksums are recomputed here with the agent's canonical JSON (sorted keys, no spaces, UTF-8)
so both ends agree on what "unchanged" means.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from typing import Any

from protocol.messages import SectionRejected

from .schemas import SCHEMAS, SectionInvalid, check_section

#: Sections the server stores (keep in step with ``agent.inventory.SECTIONS``; a test checks).
KNOWN_SECTIONS = tuple(SCHEMAS)

#: Largest canonical JSON per section, in bytes.
MAX_SECTION_BYTES = 256 * 1024
MAX_SOFTWARE_BYTES = 3 * 1024 * 1024


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def checksum(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def _problem(name: str, data: Any, checksums: Mapping[str, str]) -> tuple[str, str] | None:
    """(code, reason) why this sent section cannot be stored, or None."""
    if name not in checksums:
        return "invalid", "section sent without a checksum"
    size = len(canonical_json(data))
    limit = MAX_SOFTWARE_BYTES if name == "software" else MAX_SECTION_BYTES
    if size > limit:
        return "too_large", f"section is {size} bytes (limit {limit})"
    try:
        check_section(name, data)
    except SectionInvalid as exc:
        return "invalid", str(exc)[:240]  # names a peer-chosen key: keep it short
    if checksum(data) != checksums[name]:
        return "invalid", "checksum does not match the section's content"
    return None


def split_report(full: bool, sections: Mapping[str, Any], checksums: Mapping[str, str],
                 excluded: Collection[str] = ()) -> tuple[dict[str, Any], list[SectionRejected]]:
    """The sections that can be stored, and the refused ones with their reasons (unknown names too).

    ``excluded``: sections this device's group does not collect (personal data switched off,
    :mod:`.personal`), refused with code ``not_collected`` whatever they hold.

    A refused section is neither stored nor deleted: the store keeps its copy and its checksum
    (:func:`.inventory_store.apply_report` with ``refused``).
    """
    good: dict[str, Any] = {}
    refused: dict[str, tuple[str, str]] = {}
    for name in sorted(set(sections) | set(checksums)):
        if name not in KNOWN_SECTIONS:
            refused[name] = ("unknown_section", "the server does not store this section")
        elif name in excluded:
            refused[name] = ("not_collected", "this device's group does not collect personal data")
        elif name in sections:
            problem = _problem(name, sections[name], checksums)
            if problem is None:
                good[name] = sections[name]
            else:
                refused[name] = problem
        elif full:
            refused[name] = ("invalid", "a full report must carry every section it has a checksum for")
    rejected = [SectionRejected(section=name, code=code, reason=reason) for name, (code, reason) in refused.items()]
    return good, rejected


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
