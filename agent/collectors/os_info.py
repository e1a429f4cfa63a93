"""Operating system: /etc/os-release, kernel, architecture, boot time and time zone."""

from __future__ import annotations

import os
import platform
import shlex
import time
from pathlib import Path
from typing import Any

import psutil

from agent.collectors._util import iso_utc, read_text

OS_RELEASE_PATHS = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
TIMEZONE_FILE = Path("/etc/timezone")
LOCALTIME = Path("/etc/localtime")

_OS_RELEASE_FIELDS = {
    "name": "NAME",
    "id": "ID",
    "version": "VERSION",
    "version_id": "VERSION_ID",
    "codename": "VERSION_CODENAME",
    "pretty_name": "PRETTY_NAME",
}


def parse_os_release(text: str) -> dict[str, str]:
    """Parse os-release(5) ``KEY=value`` lines, honouring shell quoting; skip malformed lines."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            continue
        values[key.strip()] = parts[0] if parts else ""
    return values


def format_utc_offset(seconds: int) -> str:
    """``3600`` → ``"+01:00"``."""
    sign = "+" if seconds >= 0 else "-"
    minutes = abs(seconds) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def timezone_name(timezone_file: Path = TIMEZONE_FILE, localtime: Path = LOCALTIME) -> tuple[str | None, str | None]:
    """IANA zone from /etc/timezone, else from where the /etc/localtime link points."""
    value, reason = read_text(timezone_file)
    if value:
        return value.splitlines()[0].strip(), None
    try:
        target = os.readlink(localtime)
    except OSError as exc:
        return None, f"{reason}; {localtime} is not a readable link: {exc.strerror or exc}"
    marker = "zoneinfo/"
    if marker not in target:
        return None, f"{localtime} points outside a zoneinfo tree: {target}"
    return target.split(marker, 1)[1], None


def collect_os() -> dict[str, Any]:
    """os-release fields, system (Linux/Windows/Darwin), kernel, arch, boot time (ISO UTC), time zone + UTC offset."""
    unavailable: dict[str, str] = {}
    release: dict[str, str] = {}
    reasons = []
    for path in OS_RELEASE_PATHS:
        text, reason = read_text(path)
        if text:
            release = parse_os_release(text)
            break
        reasons.append(reason or str(path))
    result: dict[str, Any] = {}
    for field, key in _OS_RELEASE_FIELDS.items():
        result[field] = release.get(key) or None
        if result[field] is None:
            unavailable[field] = f"{key} not in os-release" if release else "; ".join(reasons)
    result["system"] = platform.system() or None
    result["kernel"] = platform.release() or None
    result["arch"] = platform.machine() or None
    result["boot_time"] = iso_utc(psutil.boot_time())
    name, reason = timezone_name()
    if reason:
        unavailable["timezone.name"] = reason
    result["timezone"] = {"name": name, "utc_offset": format_utc_offset(time.localtime().tm_gmtoff)}
    result["unavailable"] = unavailable
    return result
