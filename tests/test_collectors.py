"""Collectors checked against this machine's own sources of truth (files, commands, sysfs)."""

from __future__ import annotations

import os
import pathlib
import platform
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.collectors import security
from agent.collectors._util import iso_utc, read_text, run_command
from agent.collectors.hardware import collect_battery, collect_cpu, collect_disks, collect_displays, collect_memory
from agent.collectors.identity import collect_identity
from agent.collectors.network import collect_network
from agent.collectors.os_info import collect_os
from agent.collectors.software import DpkgSource, installed_software
from agent.collectors.users import collect_users
from tests.xvfb import XvfbHandle, start_xvfb

needs_dpkg = pytest.mark.skipif(not Path("/var/lib/dpkg/status").exists(), reason="not a dpkg system")


def test_identity_hostname_and_machine_id() -> None:
    """hostname is socket.gethostname(); machine_id is /etc/machine-id verbatim."""
    identity = collect_identity()
    assert identity["hostname"] == socket.gethostname()
    assert identity["machine_id"] == Path("/etc/machine-id").read_text().strip()


def test_identity_dmi_values_or_reasons() -> None:
    """Each DMI field is either the sysfs value or None with a reason — never a made-up value."""
    identity = collect_identity()
    for field, name in (
        ("manufacturer", "sys_vendor"),
        ("serial", "product_serial"),
        ("hardware_uuid", "product_uuid"),
    ):
        path = Path("/sys/class/dmi/id") / name
        if path.exists():
            assert identity[field] == (path.read_text().strip() or None)
        else:
            assert identity[field] is None
            assert str(path) in identity["unavailable"][field]


def test_identity_permission_denied_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A root-only DMI file read as a normal user gives None plus "permission denied" (simulated: tests run as root)."""
    for name, value in (
        ("sys_vendor", "ACME"),
        ("product_name", "Box 1"),
        ("product_serial", "S1"),
        ("chassis_type", "9"),
    ):
        (tmp_path / name).write_text(value + "\n")
    (tmp_path / "product_uuid").write_text("u")
    real_read_text = pathlib.Path.read_text

    def guarded(self: Path, *args: Any, **kwargs: Any) -> str:
        if self.name in ("product_serial", "product_uuid"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", guarded)
    identity = collect_identity(dmi_dir=tmp_path)
    assert (identity["manufacturer"], identity["model"], identity["chassis_type"]) == ("ACME", "Box 1", "Laptop")
    assert identity["serial"] is None and identity["hardware_uuid"] is None
    assert identity["unavailable"]["serial"].startswith("permission denied")
    assert "product_uuid" in identity["unavailable"]["hardware_uuid"]


def test_os_matches_os_release_and_platform() -> None:
    """OS fields come from /etc/os-release and platform; boot time from /proc/stat btime; zone from /etc/timezone."""
    info = collect_os()
    release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    assert info["pretty_name"] == release["PRETTY_NAME"].strip('"')
    assert info["version_id"] == release["VERSION_ID"].strip('"')
    assert info["kernel"] == platform.release() and info["arch"] == platform.machine()
    btime = next(
        int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
    )
    assert info["boot_time"] == iso_utc(btime)
    if Path("/etc/timezone").exists():
        assert info["timezone"]["name"] == Path("/etc/timezone").read_text().strip()
    assert info["timezone"]["utc_offset"][0] in "+-" and len(info["timezone"]["utc_offset"]) == 6


def test_cpu_cores_and_memory_match_kernel() -> None:
    """Logical cores equal os.cpu_count(); RAM equals /proc/meminfo MemTotal within 1 %."""
    cpu = collect_cpu()
    assert cpu["logical_cores"] == os.cpu_count()
    assert cpu["model"]
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    mem_total = int(meminfo["MemTotal"].split()[0]) * 1024
    swap_total = int(meminfo["SwapTotal"].split()[0]) * 1024
    memory = collect_memory()
    assert abs(memory["total_bytes"] - mem_total) <= mem_total * 0.01
    assert abs(memory["swap_total_bytes"] - swap_total) <= max(swap_total * 0.01, 0)


def test_disks_include_root_and_skip_pseudo_filesystems() -> None:
    """The root filesystem is reported with its statvfs sizes; tmpfs/proc/sysfs never are."""
    disks = collect_disks()
    mounts = {p["mountpoint"]: p for p in disks["partitions"]}
    assert "/" in mounts
    st = os.statvfs("/")
    assert mounts["/"]["total_bytes"] == st.f_blocks * st.f_frsize
    assert not {p["fstype"] for p in disks["partitions"]} & {"tmpfs", "proc", "sysfs", "devtmpfs", "cgroup", "squashfs"}


def test_network_macs_match_sysfs() -> None:
    """Every interface's MAC equals /sys/class/net/<if>/address and eth-like interfaces are all listed."""
    network = collect_network()
    by_name = {i["name"]: i for i in network["interfaces"]}
    sys_names = {p.name for p in Path("/sys/class/net").iterdir()}
    assert sys_names <= set(by_name)
    for name in sys_names:
        assert by_name[name]["mac"] == (Path("/sys/class/net") / name / "address").read_text().strip()


def test_network_default_route_matches_ip_route() -> None:
    """The interface flagged as default route is the one `ip route show default` names."""
    network = collect_network()
    res = run_command(["ip", "-4", "route", "show", "default"])
    if res.stdout is None:
        pytest.fail(f"ip route unavailable: {res.reason}")
    expected = {line.split(" dev ")[1].split()[0] for line in res.stdout.splitlines() if " dev " in line}
    flagged = {i["name"] for i in network["interfaces"] if i["is_default_route"]}
    assert expected <= flagged
    if expected:
        assert network["default_gateway"] == res.stdout.split(" via ")[1].split()[0]


@needs_dpkg
def test_dpkg_packages_equal_dpkg_query() -> None:
    """Software from dpkg is exactly the installed package names dpkg-query lists."""
    listed = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${db:Status-Status}\n"], capture_output=True, text=True, check=True
    ).stdout
    expected = {
        name
        for name, status in (line.split("\t") for line in listed.splitlines())
        if status not in ("config-files", "not-installed")
    }
    raw_names = set(
        subprocess.run(
            ["dpkg-query", "-W", "-f=${Package}\n"], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert expected <= raw_names
    software = installed_software([DpkgSource()])
    assert software["sources"] == ["dpkg"] and software["unavailable"] == {}
    assert {p["name"] for p in software["packages"]} == expected
    assert all(p["source"] == "dpkg" and p["version"] for p in software["packages"])


def test_missing_binary_is_unavailable_with_reason() -> None:
    """A command that is not installed is reported, not raised."""
    res = run_command(["helpline-no-such-binary", "--version"])
    assert res.stdout is None and "not found" in (res.reason or "")


def test_read_text_reasons(tmp_path: Path) -> None:
    """Missing, empty and unreadable files each give a reason instead of a value."""
    assert read_text(tmp_path / "nope")[1] is not None
    (tmp_path / "empty").write_text("\n")
    assert read_text(tmp_path / "empty") == (None, f"{tmp_path / 'empty'} is empty")
    assert read_text(tmp_path)[0] is None


def test_battery_none_without_battery_and_health_from_sysfs(tmp_path: Path) -> None:
    """No BAT* gives a null section; energy_full vs energy_full_design gives health and mWh capacities."""
    assert collect_battery(tmp_path) is None
    if not list(Path("/sys/class/power_supply").glob("BAT*")):
        assert collect_battery() is None
    bat = tmp_path / "BAT0"
    bat.mkdir()
    (bat / "energy_full").write_text("42000000\n")
    (bat / "energy_full_design").write_text("50000000\n")
    (bat / "technology").write_text("Li-ion\n")
    battery = collect_battery(tmp_path)
    assert battery is not None
    assert battery["health_percent"] == 84.0
    assert (battery["design_capacity_mwh"], battery["full_capacity_mwh"]) == (50000, 42000)
    assert battery["chemistry"] == "Li-ion"
    assert battery["serial"] is None and "serial" in battery["unavailable"]


@pytest.fixture
def xvfb() -> Iterator[XvfbHandle]:
    """A 1280x720 Xvfb killed by PID afterwards (fails, not skips, when Xvfb is missing)."""
    handle = start_xvfb(1280, 720)
    yield handle
    handle.stop()


def test_displays_from_mss(xvfb: XvfbHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """mss reports the Xvfb screen's geometry."""
    monkeypatch.setenv("DISPLAY", xvfb.display)
    displays = collect_displays()
    assert displays["monitors"] == [{"index": 1, "width": 1280, "height": 720, "left": 0, "top": 0}]


def test_displays_without_display(monkeypatch: pytest.MonkeyPatch) -> None:
    """No $DISPLAY means no monitors and a reason."""
    monkeypatch.delenv("DISPLAY", raising=False)
    displays = collect_displays()
    assert displays["monitors"] == [] and "DISPLAY" in displays["unavailable"]["monitors"]


def test_users_match_psutil_sessions() -> None:
    """Users are the distinct names of the utmp sessions."""
    import psutil

    users = collect_users()
    assert users["users"] == sorted({u.name for u in psutil.users()})
    assert len(users["sessions"]) == len(psutil.users())


@pytest.mark.skipif(not Path("/usr/bin/apt-get").exists(), reason="apt only")
@pytest.mark.serial  # apt-get -s takes ~5 s of CPU here, the collector gives up at 10 s: not beside another worker
def test_pending_updates_match_apt_simulation() -> None:
    """The pending update count equals the Inst lines of apt-get -s upgrade; a second call is memoised."""
    security.forget_pending_updates()
    sec = security.collect_security(updates_wait_s=30)
    out = subprocess.run(["apt-get", "-s", "-q", "upgrade"], capture_output=True, text=True, timeout=30).stdout
    assert sec["pending_updates"] == {
        "manager": "apt",
        "count": sum(line.startswith("Inst ") for line in out.splitlines()),
    }
    again = security.collect_security(updates_wait_s=0)
    assert again["pending_updates"] == sec["pending_updates"]


def test_security_sections_report_evidence() -> None:
    """Encryption matches lsblk's crypt devices; firewall is a known backend or None with a reason."""
    sec = security.collect_security(updates_wait_s=0)
    lsblk = subprocess.run(["lsblk", "-J", "-o", "NAME,TYPE,FSTYPE"], capture_output=True, text=True).stdout
    assert sec["disk_encryption"]["encrypted"] == ('"crypt"' in lsblk or "crypto_LUKS" in lsblk)
    fw = sec["firewall"]
    assert fw["backend"] in (None, "ufw", "firewalld", "nftables")
    if fw["backend"] is None:
        assert fw["active"] is None and sec["unavailable"]["firewall"]
    assert sec["reboot_required"]["required"] == Path("/run/reboot-required").exists()
