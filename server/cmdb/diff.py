"""Change records between two versions of a section (pure functions, no I/O).

Dict sections are compared per field path (``timezone.name``); lists are compared as one
value, except installed software, compared per package: added, removed, version changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_VALUE_LEN = 4096


@dataclass(frozen=True)
class Change:
    section: str
    path: str
    change: str  # added | removed | changed | section_added | section_removed
    old: str | None
    new: str | None


def _enc(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text[:MAX_VALUE_LEN]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists and scalars are leaves."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, dict) and item:
            out.update(flatten(item, path))
        else:
            out[path] = item
    return out


def package_key(pkg: dict[str, Any]) -> str:
    arch = pkg.get("arch") or ""
    return f"{pkg['name']}:{arch}" if arch else str(pkg["name"])


def packages_by_key(data: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(data, dict):
        return {}
    return {package_key(p): p for p in data.get("packages") or [] if isinstance(p, dict) and "name" in p}


def diff_software(old: Any, new: Any) -> list[Change]:
    before, after = packages_by_key(old), packages_by_key(new)
    changes: list[Change] = []
    for key in sorted(set(before) | set(after)):
        if key not in before:
            changes.append(Change("software", key, "added", None, _enc(after[key].get("version"))))
        elif key not in after:
            changes.append(Change("software", key, "removed", _enc(before[key].get("version")), None))
        elif before[key].get("version") != after[key].get("version"):
            changes.append(Change("software", key, "changed", _enc(before[key].get("version")),
                                  _enc(after[key].get("version"))))
    for key in ("sources",):
        if isinstance(old, dict) and isinstance(new, dict) and old.get(key) != new.get(key):
            changes.append(Change("software", key, "changed", _enc(old.get(key)), _enc(new.get(key))))
    return changes


def diff_section(section: str, old: Any, new: Any) -> list[Change]:
    """Changes from ``old`` to ``new`` (both present)."""
    if section == "software":
        return diff_software(old, new)
    before, after = flatten(old), flatten(new)
    changes: list[Change] = []
    for path in sorted(set(before) | set(after)):
        if path not in before:
            changes.append(Change(section, path, "added", None, _enc(after[path])))
        elif path not in after:
            changes.append(Change(section, path, "removed", _enc(before[path]), None))
        elif before[path] != after[path]:
            changes.append(Change(section, path, "changed", _enc(before[path]), _enc(after[path])))
    return changes
