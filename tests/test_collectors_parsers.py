"""Pure parsers of the collectors, run on recorded (or documented-format) output in tests/fixtures/."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.collectors.hardware import parse_cpu_model
from agent.collectors.identity import chassis_name
from agent.collectors.network import parse_proc_ipv6_route, parse_proc_net_route
from agent.collectors.os_info import format_utc_offset, parse_os_release
from agent.collectors.security import (
    nft_ruleset_active,
    parse_apt_simulate,
    parse_dnf_check_update,
    parse_lsblk_crypt,
    parse_ufw_status,
)
from agent.collectors.software import (
    Package,
    parse_dpkg_query,
    parse_reg_query_uninstall,
    parse_rpm_query,
    parse_system_profiler_apps,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_dpkg_parser_skips_config_files_and_keeps_fields() -> None:
    """dpkg-query rows become packages; removed-but-configured ones are not installed software."""
    packages = parse_dpkg_query(fixture("dpkg-query.txt"), lambda name, arch: f"date-of-{name}-{arch}")
    names = [p.name for p in packages]
    assert "libfoo1" not in names
    assert len(packages) == 13
    adduser = packages[0]
    assert adduser == Package(
        name="adduser",
        version="3.134",
        arch="all",
        source="dpkg",
        vendor="Debian Adduser Developers <adduser@packages.debian.org>",
        install_date="date-of-adduser-all",
    )
    assert packages[-1].arch == "amd64"


def test_rpm_parser_epoch_none_vendor_and_install_time() -> None:
    """rpm rows keep epoch:version-release, map "(none)" to None and INSTALLTIME to ISO UTC."""
    packages = {p.name: p for p in parse_rpm_query(fixture("rpm-qa.txt"))}
    assert packages["bash"].version == "5.2.15-2.fc38"
    assert packages["bash"].install_date == "2023-11-15T09:56:51Z"
    assert packages["NetworkManager"].version == "1:1.42.8-1.fc38"
    assert packages["gpg-pubkey"].arch is None and packages["gpg-pubkey"].vendor is None
    assert packages["google-chrome-stable"].vendor == "Google Inc."
    assert {p.source for p in packages.values()} == {"rpm"}


def test_reg_query_parser_follows_apps_and_features_rules() -> None:
    """reg query output: system components, updates and nameless keys are dropped; WOW6432Node is x86."""
    packages = {p.name: p for p in parse_reg_query_uninstall(fixture("reg-query-uninstall.txt"))}
    assert set(packages) == {
        "7-Zip 23.01 (x64)",
        "Microsoft Visual C++ 2015-2022 Redistributable (x64) - 14.38.33130",
        "Notepad++ (32-bit x86)",
    }
    vc = packages["Microsoft Visual C++ 2015-2022 Redistributable (x64) - 14.38.33130"]
    assert (vc.version, vc.vendor, vc.install_date, vc.arch) == (
        "14.38.33130.0",
        "Microsoft Corporation",
        "2023-12-14",
        None,
    )
    npp = packages["Notepad++ (32-bit x86)"]
    assert npp.arch == "x86" and npp.install_date is None  # "2023-11-02" is not the documented YYYYMMDD
    assert packages["7-Zip 23.01 (x64)"].vendor == "Igor Pavlov"


def test_system_profiler_parser_vendor_arch_and_no_install_date() -> None:
    """system_profiler JSON: vendor from Developer ID signer or Apple, arch_kind mapped, no invented dates."""
    packages = {p.name: p for p in parse_system_profiler_apps(fixture("system_profiler-SPApplicationsDataType.json"))}
    assert packages["Safari"].vendor == "Apple Inc." and packages["Safari"].arch == "universal"
    assert packages["Google Chrome"].vendor == "Google LLC" and packages["Google Chrome"].version == "119.0.6045.159"
    assert packages["OldTool"].vendor is None and packages["OldTool"].version is None
    assert all(p.install_date is None for p in packages.values())


def test_system_profiler_parser_tolerates_garbage() -> None:
    """Malformed system_profiler output yields no packages instead of raising."""
    assert parse_system_profiler_apps("not json") == []
    assert parse_system_profiler_apps('{"SPApplicationsDataType": [1, {"_name": 3}]}') == []


def test_os_release_parser_handles_quotes() -> None:
    """os-release values are unquoted as the shell would."""
    values = parse_os_release(fixture("os-release-debian12.txt"))
    assert values["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
    assert values["VERSION_CODENAME"] == "bookworm"
    assert parse_os_release("NAME='Arch Linux'\n# comment\nBROKEN\nID=arch") == {"NAME": "Arch Linux", "ID": "arch"}


def test_utc_offset_format() -> None:
    """UTC offsets in seconds become ±HH:MM."""
    assert format_utc_offset(0) == "+00:00"
    assert format_utc_offset(19800) == "+05:30"
    assert format_utc_offset(-12600) == "-03:30"


def test_proc_net_route_default_and_gateway() -> None:
    """The recorded route table has eth0 as default with gateway 192.0.2.1."""
    assert parse_proc_net_route(fixture("proc-net-route.txt")) == {"eth0": "192.0.2.1"}


def test_proc_ipv6_route_default() -> None:
    """The IPv6 ::/0 route on eth0 counts; the loopback's unreachable ::/0 does not."""
    assert parse_proc_ipv6_route(fixture("proc-net-ipv6_route.txt")) == {"eth0"}


def test_cpu_model_from_cpuinfo() -> None:
    """x86 "model name" and ARM "Model" lines are both understood."""
    assert parse_cpu_model(fixture("cpuinfo-x86.txt")) == "AMD EPYC"
    assert parse_cpu_model("processor\t: 0\nBogoMIPS\t: 108.00\n\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n") == (
        "Raspberry Pi 4 Model B Rev 1.4"
    )
    assert parse_cpu_model("processor : 0\n") is None


def test_chassis_codes() -> None:
    """SMBIOS chassis codes map to names; unknown codes stay visible."""
    assert chassis_name("10") == "Notebook"
    assert chassis_name("99") == "SMBIOS chassis type 99"


def test_lsblk_crypt_detection() -> None:
    """A LUKS container and its dm-crypt mapping are found; a plain disk yields nothing."""
    found = parse_lsblk_crypt(fixture("lsblk-luks.json"))
    assert [d["name"] for d in found] == ["nvme0n1p3", "nvme0n1p3_crypt"]
    assert parse_lsblk_crypt(fixture("lsblk-plain.json")) == []


def test_apt_simulation_count() -> None:
    """Only "Inst" lines of apt-get -s upgrade are pending upgrades."""
    names = parse_apt_simulate(fixture("apt-get-s-upgrade.txt"))
    assert len(names) == 114
    assert names[0] == "base-files"


def test_dnf_check_update_count() -> None:
    """dnf check-update lists three upgrades; the obsoletes section is not counted."""
    assert parse_dnf_check_update(fixture("dnf-check-update.txt")) == ["bash", "kernel-core", "python3-libs"]


@pytest.mark.parametrize(("name", "expected"), [("ufw-status-active.txt", True), ("ufw-status-inactive.txt", False)])
def test_ufw_status(name: str, expected: bool) -> None:
    """ufw status lines map to active/inactive."""
    assert parse_ufw_status(fixture(name)) is expected
    assert parse_ufw_status("ERROR: You need to be root") is None


def test_nft_ruleset() -> None:
    """A ruleset with a table is active; empty output is not."""
    assert nft_ruleset_active(fixture("nft-list-ruleset.txt"))
    assert not nft_ruleset_active("")
