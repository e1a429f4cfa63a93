"""Installed software from the OS package databases.

Each source is a ``PackageSource``: ``available()`` says whether this machine has it and
``collect()`` runs the query. The text → packages parsers (``parse_dpkg_query``,
``parse_rpm_query``, ``parse_reg_query_uninstall``, ``parse_system_profiler_apps``) are pure
functions tested on recorded output in tests/fixtures/.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from agent.collectors._util import iso_utc, run_command

log = logging.getLogger(__name__)

DPKG_INFO = Path("/var/lib/dpkg/info")
COMMAND_TIMEOUT_S = 20.0

# Tab-separated, one package per line. db:Status-Status tells installed from removed-but-configured.
# The source package and its version last: the Debian Security Tracker and OSV's Debian entries are
# keyed by source package (``openssl``), not by the binaries it builds (``libssl3``).
DPKG_FORMAT = ("${db:Status-Status}\\t${Package}\\t${Version}\\t${Architecture}\\t${Maintainer}"
               "\\t${source:Package}\\t${source:Version}\\n")
# Statuses with no files on disk: not reported as installed software.
_DPKG_ABSENT = frozenset({"not-installed", "config-files"})
RPM_FORMAT = "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{VENDOR}\\t%{INSTALLTIME}\\n"
REG_UNINSTALL_KEYS = (
    "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
    "HKLM\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
    "HKCU\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
)


@dataclass(frozen=True, slots=True)
class Package:
    """One installed package; ``install_date`` is ISO 8601 (date or UTC datetime) or None."""

    name: str
    version: str | None
    arch: str | None
    source: str
    vendor: str | None
    install_date: str | None
    #: The source package it was built from and that package's version (dpkg), each only when it
    #: differs from ``name``/``version``: a binNMU's binary ``5.2.15-2+b8`` comes from source ``5.2.15-2``.
    source_package: str | None = None
    source_version: str | None = None


class PackageSource(Protocol):
    """A package database this OS may have."""

    name: str

    def available(self) -> bool:
        """Whether this machine has the database (its query tool is installed)."""
        ...

    def collect(self) -> tuple[list[Package], str | None]:
        """Installed packages, or ``([], reason)`` when the query failed."""
        ...


def _none_if_empty(value: str) -> str | None:
    value = value.strip()
    return value if value and value != "(none)" else None


def has_binary(binary: str) -> bool:
    """Whether ``binary`` is on PATH (the test for a package database being present)."""
    return shutil.which(binary) is not None


# --- dpkg -------------------------------------------------------------------------------------


def parse_dpkg_query(
    text: str, install_date: Callable[[str, str | None], str | None] = lambda _n, _a: None
) -> list[Package]:
    """Parse ``dpkg-query -W -f=DPKG_FORMAT`` output; ``install_date(name, arch)`` supplies dates.

    Lines without the two source fields (the older five-field format) give no source package."""
    packages = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) == 5:
            fields += ["", ""]
        if len(fields) != 7 or not fields[1]:
            continue
        status, name, version, arch, maintainer, src_name, src_version = fields
        if status in _DPKG_ABSENT:
            continue
        arch_or_none = _none_if_empty(arch)
        src_name, src_version = src_name.strip(), src_version.strip()
        packages.append(
            Package(
                name=name,
                version=_none_if_empty(version),
                arch=arch_or_none,
                source="dpkg",
                vendor=_none_if_empty(maintainer),
                install_date=install_date(name, arch_or_none),
                source_package=src_name if src_name and src_name != name else None,
                source_version=src_version if src_version and src_version != version.strip() else None,
            )
        )
    return packages


def dpkg_install_date(name: str, arch: str | None, info_dir: Path = DPKG_INFO) -> str | None:
    """mtime of the package's file list (``name.list`` or multi-arch ``name:arch.list``), ISO UTC."""
    candidates = [info_dir / f"{name}.list"]
    if arch:
        candidates.append(info_dir / f"{name}:{arch}.list")
    for path in candidates:
        try:
            return iso_utc(path.stat().st_mtime)
        except OSError:
            continue
    return None


class DpkgSource:
    """Debian/Ubuntu packages via dpkg-query."""

    name = "dpkg"

    def available(self) -> bool:
        return has_binary("dpkg-query")

    def collect(self) -> tuple[list[Package], str | None]:
        result = run_command(["dpkg-query", "-W", f"-f={DPKG_FORMAT}"], timeout=COMMAND_TIMEOUT_S)
        if result.reason or result.stdout is None:
            return [], result.reason
        return parse_dpkg_query(result.stdout, dpkg_install_date), None


# --- rpm --------------------------------------------------------------------------------------


def parse_rpm_query(text: str) -> list[Package]:
    """Parse ``rpm -qa --queryformat RPM_FORMAT``; INSTALLTIME (epoch seconds) becomes ISO UTC."""
    packages = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 5 or not fields[0]:
            continue
        name, version, arch, vendor, installtime = fields
        try:
            date: str | None = iso_utc(int(installtime))
        except ValueError:
            date = None
        packages.append(
            Package(name, _none_if_empty(version), _none_if_empty(arch), "rpm", _none_if_empty(vendor), date)
        )
    return packages


class RpmSource:
    """RPM-based distributions via rpm -qa."""

    name = "rpm"

    def available(self) -> bool:
        return has_binary("rpm")

    def collect(self) -> tuple[list[Package], str | None]:
        result = run_command(["rpm", "-qa", "--queryformat", RPM_FORMAT], timeout=COMMAND_TIMEOUT_S)
        if result.reason or result.stdout is None:
            return [], result.reason
        return parse_rpm_query(result.stdout), None


# --- Windows ----------------------------------------------------------------------------------

_REG_VALUE = re.compile(r"^ {4}(\S(?:.*?\S)?) {4}(REG_[A-Z_]+)(?: {4}(.*))?$")


def _reg_entries(text: str) -> Iterable[tuple[str, dict[str, str]]]:
    key: str | None = None
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if line.startswith("HKEY_"):
            if key is not None:
                yield key, values
            key, values = line.strip(), {}
            continue
        match = _REG_VALUE.match(line)
        if match and key is not None:
            values[match.group(1)] = (match.group(3) or "").strip()
    if key is not None:
        yield key, values


def _reg_install_date(value: str | None) -> str | None:
    """Uninstall ``InstallDate`` is ``YYYYMMDD``; anything else is not a date we trust."""
    if not value or not re.fullmatch(r"\d{8}", value):
        return None
    try:
        return datetime.strptime(value, "%Y%m%d").replace(tzinfo=UTC).date().isoformat()
    except ValueError:
        return None


def parse_reg_query_uninstall(text: str) -> list[Package]:
    """Parse ``reg query <Uninstall key> /s`` output (Windows ``reg.exe`` text format).

    Each subkey header (``HKEY_...\\Uninstall\\<id>``) is followed by value lines
    ``<4 spaces>Name<4 spaces>REG_TYPE<4 spaces>Data``. Like "Apps & features", entries
    without ``DisplayName``, system components and updates (``ParentKeyName``) are left out.
    Keys under ``WOW6432Node`` are 32-bit programs on 64-bit Windows (arch ``x86``).
    """
    packages = []
    for key, values in _reg_entries(text):
        name = values.get("DisplayName", "").strip()
        if not name or values.get("SystemComponent", "").lower() in ("0x1", "1") or "ParentKeyName" in values:
            continue
        packages.append(
            Package(
                name=name,
                version=_none_if_empty(values.get("DisplayVersion", "")),
                arch="x86" if "\\WOW6432Node\\" in key else None,
                source="windows-uninstall",
                vendor=_none_if_empty(values.get("Publisher", "")),
                install_date=_reg_install_date(values.get("InstallDate")),
            )
        )
    return packages


class WindowsUninstallSource:
    """Windows programs from the registry Uninstall keys via ``reg query``."""

    name = "windows-uninstall"

    def available(self) -> bool:
        return sys.platform == "win32" and has_binary("reg")

    def collect(self) -> tuple[list[Package], str | None]:
        packages: list[Package] = []
        reasons = []
        for key in REG_UNINSTALL_KEYS:
            result = run_command(["reg", "query", key, "/s"], timeout=COMMAND_TIMEOUT_S)
            if result.stdout is None or result.reason:
                reasons.append(f"{key}: {result.reason}")
                continue
            packages.extend(parse_reg_query_uninstall(result.stdout))
        return packages, "; ".join(reasons) if reasons and not packages else None


# --- macOS ------------------------------------------------------------------------------------

_ARCH_KINDS = {
    "arch_arm_i64": "universal",
    "arch_arm": "arm64",
    "arch_i64": "x86_64",
    "arch_i32": "i386",
    "arch_ios": "arm64",
}
_SIGNER = re.compile(r"^Developer ID Application: (.+?)(?: \([A-Z0-9]{10}\))?$")


def _mac_vendor(app: dict[str, Any]) -> str | None:
    signed_by = app.get("signed_by")
    if isinstance(signed_by, list) and signed_by and isinstance(signed_by[0], str):
        match = _SIGNER.match(signed_by[0])
        if match:
            return match.group(1)
    if app.get("obtained_from") == "apple":
        return "Apple Inc."
    return None


def parse_system_profiler_apps(text: str) -> list[Package]:
    """Parse ``system_profiler SPApplicationsDataType -json``.

    Vendor comes from the Developer ID signer (or Apple for ``obtained_from: apple``).
    ``lastModified`` is the bundle's modification time, not an install date, so
    install_date stays None.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        log.warning("system_profiler output is not JSON: %s", exc)
        return []
    apps = doc.get("SPApplicationsDataType") if isinstance(doc, dict) else None
    packages = []
    for app in apps if isinstance(apps, list) else []:
        if not isinstance(app, dict) or not isinstance(app.get("_name"), str):
            continue
        version = app.get("version")
        arch_kind = app.get("arch_kind")
        packages.append(
            Package(
                name=app["_name"],
                version=version if isinstance(version, str) else None,
                arch=_ARCH_KINDS.get(arch_kind) if isinstance(arch_kind, str) else None,
                source="macos-applications",
                vendor=_mac_vendor(app),
                install_date=None,
            )
        )
    return packages


class MacApplicationsSource:
    """macOS application bundles via system_profiler."""

    name = "macos-applications"

    def available(self) -> bool:
        return sys.platform == "darwin" and has_binary("system_profiler")

    def collect(self) -> tuple[list[Package], str | None]:
        result = run_command(["system_profiler", "SPApplicationsDataType", "-json"], timeout=60.0)
        if result.reason or result.stdout is None:
            return [], result.reason
        return parse_system_profiler_apps(result.stdout), None


# --- aggregation ------------------------------------------------------------------------------


ALL_SOURCES: tuple[PackageSource, ...] = (DpkgSource(), RpmSource(), WindowsUninstallSource(), MacApplicationsSource())


def installed_software(sources: Iterable[PackageSource] = ALL_SOURCES) -> dict[str, Any]:
    """Packages from every source available on this OS, sorted by (name, arch, source)."""
    packages: list[Package] = []
    used: list[str] = []
    unavailable: dict[str, str] = {}
    for source in sources:
        if not source.available():
            continue
        found, reason = source.collect()
        used.append(source.name)
        if reason:
            unavailable[source.name] = reason
        packages.extend(found)
    if not used:
        unavailable["packages"] = "no supported package database on this OS"
    packages.sort(key=lambda p: (p.name, p.arch or "", p.source, p.version or ""))
    return {"sources": used, "packages": [_package_dict(p) for p in packages], "unavailable": unavailable}


def _package_dict(package: Package) -> dict[str, Any]:
    """The package as reported; the source fields only when set (most packages are their own source)."""
    data = asdict(package)
    for key in ("source_package", "source_version"):
        if data[key] is None:
            del data[key]
    return data
