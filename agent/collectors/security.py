"""Security posture: dm-crypt/LUKS disk encryption, firewall state, pending updates, reboot flag.

Every check names its evidence (which tool or file) and reports ``None`` plus a reason when
it cannot decide, so "no firewall found" and "could not look" stay distinct.
The pending-updates simulation is the only slow step (apt-get -s takes ~1.5 s without apt's
binary cache), so it runs in a background thread and its result is memoised on the mtimes of
the package database and index files: the answer cannot change until one of them does.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.collectors._util import read_text, run_command
from agent.collectors.software import has_binary

log = logging.getLogger(__name__)

SYS_BLOCK = Path("/sys/block")
REBOOT_REQUIRED = Path("/run/reboot-required")
REBOOT_REQUIRED_PKGS = Path("/run/reboot-required.pkgs")
APT_STATE_PATHS: tuple[Path, ...] = (
    Path("/var/lib/dpkg/status"),
    Path("/var/lib/apt/lists"),
    Path("/etc/apt/sources.list"),
)
DNF_STATE_PATHS: tuple[Path, ...] = (Path("/var/lib/rpm"), Path("/var/cache/dnf"))
UPDATES_TIMEOUT_S = 10.0
QUICK_TIMEOUT_S = 3.0
# How long one inventory waits for the update simulation before reporting it as pending.
UPDATES_WAIT_S = 1.0


# --- disk encryption ----------------------------------------------------------------------------


def parse_lsblk_crypt(text: str) -> list[dict[str, str | None]]:
    """Block devices from ``lsblk -J -o NAME,TYPE,FSTYPE`` that are dm-crypt mappings or LUKS containers."""
    doc = json.loads(text)
    found: list[dict[str, str | None]] = []

    def walk(devices: Iterable[Any]) -> None:
        for dev in devices:
            if not isinstance(dev, dict):
                continue
            if dev.get("type") == "crypt" or dev.get("fstype") == "crypto_LUKS":
                found.append({"name": dev.get("name"), "type": dev.get("type"), "fstype": dev.get("fstype")})
            walk(dev.get("children") or [])

    walk(doc.get("blockdevices") or [] if isinstance(doc, dict) else [])
    return found


def sysfs_crypt_mappings(sys_block: Path = SYS_BLOCK) -> list[dict[str, str | None]]:
    """dm devices whose device-mapper UUID starts with ``CRYPT-`` (set by cryptsetup)."""
    found: list[dict[str, str | None]] = []
    for uuid_path in sorted(sys_block.glob("dm-*/dm/uuid")):
        uuid, _ = read_text(uuid_path)
        if uuid and uuid.startswith("CRYPT-"):
            name, _ = read_text(uuid_path.parent / "name")
            found.append({"name": name or uuid_path.parent.parent.name, "type": "crypt", "fstype": None})
    return found


def disk_encryption(unavailable: dict[str, str]) -> dict[str, Any]:
    """Whether any dm-crypt/LUKS device exists, from lsblk or else sysfs."""
    result = run_command(["lsblk", "-J", "-o", "NAME,TYPE,FSTYPE"], timeout=QUICK_TIMEOUT_S)
    devices: list[dict[str, str | None]] | None = None
    if result.stdout is not None and result.reason is None:
        try:
            devices = parse_lsblk_crypt(result.stdout)
        except (json.JSONDecodeError, AttributeError) as exc:
            log.warning("lsblk -J output unparsable: %s", exc)
    if devices is None:
        if not SYS_BLOCK.is_dir():
            unavailable["disk_encryption"] = f"{result.reason or 'lsblk output unparsable'}; no {SYS_BLOCK}"
            return {"method": "dm-crypt", "encrypted": None, "devices": []}
        devices = sysfs_crypt_mappings()
    return {"method": "dm-crypt", "encrypted": bool(devices), "devices": devices}


# --- firewall -----------------------------------------------------------------------------------


def parse_ufw_status(text: str) -> bool | None:
    """``ufw status`` → True for "Status: active", False for "inactive", None otherwise."""
    for line in text.splitlines():
        if line.lower().startswith("status:"):
            state = line.split(":", 1)[1].strip().lower()
            return {"active": True, "inactive": False}.get(state)
    return None


def nft_ruleset_active(text: str) -> bool:
    """An nftables ruleset is in force when ``nft list ruleset`` shows at least one table."""
    return any(line.startswith("table ") for line in text.splitlines())


def firewall(unavailable: dict[str, str]) -> dict[str, Any]:
    """First firewall front-end found active (ufw, firewalld, raw nftables), else what was seen."""
    reasons: list[str] = []
    seen_inactive: str | None = None
    if has_binary("ufw"):
        res = run_command(["ufw", "status"], timeout=QUICK_TIMEOUT_S)
        state = parse_ufw_status(res.stdout) if res.stdout is not None and res.reason is None else None
        if state:
            return {"backend": "ufw", "active": True}
        if state is False:
            seen_inactive = "ufw"
        else:
            reasons.append(f"ufw: {res.reason or 'unrecognised status output'}")
    if has_binary("firewall-cmd"):
        # firewall-cmd --state: exit 0 "running", exit 252 "not running".
        res = run_command(["firewall-cmd", "--state"], timeout=QUICK_TIMEOUT_S, ok_codes=(0, 252))
        if res.stdout is not None and res.reason is None:
            if res.returncode == 0:
                return {"backend": "firewalld", "active": True}
            seen_inactive = seen_inactive or "firewalld"
        else:
            reasons.append(f"firewalld: {res.reason}")
    if has_binary("nft"):
        res = run_command(["nft", "list", "ruleset"], timeout=QUICK_TIMEOUT_S)
        if res.stdout is not None and res.reason is None:
            if nft_ruleset_active(res.stdout):
                return {"backend": "nftables", "active": True}
            seen_inactive = seen_inactive or "nftables"
        else:
            reasons.append(f"nftables: {res.reason}")
    if seen_inactive:
        return {"backend": seen_inactive, "active": False}
    unavailable["firewall"] = "; ".join(reasons) or "none of ufw, firewall-cmd, nft is installed"
    return {"backend": None, "active": None}


# --- pending updates ----------------------------------------------------------------------------


def parse_apt_simulate(text: str) -> list[str]:
    """Package names from ``apt-get -s upgrade`` ("Inst <pkg> [old] (new ...)" lines)."""
    return [line.split()[1] for line in text.splitlines() if line.startswith("Inst ") and len(line.split()) > 1]


def parse_dnf_check_update(text: str) -> list[str]:
    """Package names from ``dnf -q check-update`` ("name.arch  version  repo"), obsoletes excluded."""
    names = []
    for line in text.splitlines():
        if line.startswith("Obsoleting"):
            break
        fields = line.split()
        if len(fields) == 3 and "." in fields[0] and not line.startswith(" "):
            names.append(fields[0].rsplit(".", 1)[0])
    return names


@dataclass
class _Probe:
    """One run of the update simulation for a given package-database state."""

    key: tuple[int, ...]
    done: threading.Event = field(default_factory=threading.Event)
    value: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


_probes: dict[str, _Probe] = {}
_probes_lock = threading.Lock()


def _state_key(paths: Iterable[Path]) -> tuple[int, ...]:
    key = []
    for path in paths:
        try:
            key.append(path.stat().st_mtime_ns)
        except OSError:
            key.append(-1)
    return tuple(key)


def _apt_updates() -> tuple[dict[str, Any], str | None]:
    res = run_command(["apt-get", "-s", "-q", "upgrade"], timeout=UPDATES_TIMEOUT_S)
    if res.stdout is None or res.reason:
        return {"manager": "apt", "count": None}, res.reason
    return {"manager": "apt", "count": len(parse_apt_simulate(res.stdout))}, None


def _dnf_updates() -> tuple[dict[str, Any], str | None]:
    # -C: use the metadata cache only, never reach the network from an inventory run.
    res = run_command(["dnf", "-q", "-C", "check-update"], timeout=UPDATES_TIMEOUT_S, ok_codes=(0, 100))
    if res.stdout is None or res.reason:
        return {"manager": "dnf", "count": None}, res.reason
    return {"manager": "dnf", "count": len(parse_dnf_check_update(res.stdout))}, None


def _run_probe(probe: _Probe, query: Callable[[], tuple[dict[str, Any], str | None]]) -> None:
    try:
        probe.value, probe.reason = query()
    except Exception as exc:  # the thread must always signal done
        log.exception("pending-updates query failed")
        probe.value, probe.reason = {}, f"query failed: {exc}"
    finally:
        probe.done.set()


def pending_updates(unavailable: dict[str, str], wait_s: float = UPDATES_WAIT_S) -> dict[str, Any]:
    """Number of upgradable packages per the local package indexes (no network).

    The simulation runs in a background thread and its answer is kept until the package
    database or indexes change. A caller waits at most ``wait_s``; if the answer is not ready
    the count is None (with the reason) and a later inventory reports it.
    """
    if has_binary("apt-get"):
        manager, paths, query = "apt", APT_STATE_PATHS, _apt_updates
    elif has_binary("dnf"):
        manager, paths, query = "dnf", DNF_STATE_PATHS, _dnf_updates
    else:
        unavailable["pending_updates"] = "neither apt-get nor dnf is installed"
        return {"manager": None, "count": None}
    key = _state_key(paths)
    with _probes_lock:
        probe = _probes.get(manager)
        if probe is None or probe.key != key or (probe.done.is_set() and probe.reason is not None):
            probe = _Probe(key)
            _probes[manager] = probe
            threading.Thread(
                target=_run_probe, args=(probe, query), name=f"pending-updates-{manager}", daemon=True
            ).start()
    if not probe.done.wait(wait_s):
        unavailable["pending_updates"] = f"{manager} upgrade simulation still running after {wait_s:g}s"
        return {"manager": manager, "count": None}
    if probe.reason:
        unavailable["pending_updates"] = probe.reason
        return {"manager": manager, "count": None}
    return {"manager": manager, "count": probe.value.get("count")}


# --- reboot -------------------------------------------------------------------------------------


def reboot_required(unavailable: dict[str, str]) -> dict[str, Any]:
    """Debian's /run/reboot-required flag (and the packages that set it), or needs-restarting -r."""
    if REBOOT_REQUIRED.exists():
        text, _ = read_text(REBOOT_REQUIRED_PKGS)
        pkgs = sorted({line.strip() for line in (text or "").splitlines() if line.strip()})
        return {"required": True, "packages": pkgs}
    if Path("/var/lib/dpkg").is_dir():
        return {"required": False, "packages": []}
    if has_binary("needs-restarting"):
        # needs-restarting -r: exit 1 means a reboot is needed, 0 means not.
        res = run_command(["needs-restarting", "-r"], timeout=QUICK_TIMEOUT_S, ok_codes=(0, 1))
        if res.reason is None:
            return {"required": res.returncode == 1, "packages": []}
        unavailable["reboot_required"] = res.reason
    else:
        unavailable["reboot_required"] = f"no {REBOOT_REQUIRED} convention and no needs-restarting"
    return {"required": None, "packages": []}


def collect_security(*, updates_wait_s: float = UPDATES_WAIT_S) -> dict[str, Any]:
    """Disk encryption, firewall, pending updates and reboot-required, each with its evidence."""
    unavailable: dict[str, str] = {}
    return {
        "disk_encryption": disk_encryption(unavailable),
        "firewall": firewall(unavailable),
        "pending_updates": pending_updates(unavailable, updates_wait_s),
        "reboot_required": reboot_required(unavailable),
        "unavailable": unavailable,
    }


def forget_pending_updates() -> None:
    """Drop memoised update counts so the next call re-runs the simulation."""
    with _probes_lock:
        _probes.clear()


__all__ = [
    "collect_security",
    "forget_pending_updates",
    "nft_ruleset_active",
    "parse_apt_simulate",
    "parse_dnf_check_update",
    "parse_lsblk_crypt",
    "parse_ufw_status",
    "sysfs_crypt_mappings",
]
