"""Issue 17 collectors against this machine's own truth (lsblk, /etc/passwd, /etc/group, /etc/resolv.conf,
/proc/cpuinfo, systemd-detect-virt, lspci, hostname -f), and their parsers on recorded or built outputs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from agent.collectors.accounts import collect_accounts, parse_group, parse_passwd
from agent.collectors.controllers import collect_controllers, parse_lspci_vmm
from agent.collectors.dns import collect_dns, parse_resolv_conf, parse_resolvectl_dns
from agent.collectors.hardware import collect_cpu, parse_cpu_identity
from agent.collectors.identity import collect_identity
from agent.collectors.logins import LASTLOG_RECORD, UTMP, collect_logins, parse_lastlog, parse_wtmp
from agent.collectors.storage import collect_storage, parse_lsblk, parse_smartctl_health
from agent.collectors.virtualization import collect_virtualization
from server.exports.servicenow import to_servicenow_ire

FIXTURES = Path(__file__).parent / "fixtures"


def _run(*argv: str) -> str:
    env = {**os.environ, "TZ": "UTC", "LC_ALL": "C"}  # `last` prints local time
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30, env=env).stdout


def test_storage_matches_lsblk() -> None:
    """Every whole non-virtual disk lsblk lists is reported with lsblk's size, model and serial."""
    raw = json.loads(_run("lsblk", "-J", "-b", "-d", "-o", "NAME,SIZE,MODEL,SERIAL,TYPE"))["blockdevices"]
    expected = {d["name"]: d for d in raw if d["type"] == "disk"
                and not d["name"].startswith(("loop", "zram", "ram", "dm-", "md", "nbd", "sr"))}
    storage = collect_storage()
    got = {d["name"]: d for d in storage["devices"]}
    assert storage["source"] == "lsblk" and set(got) == set(expected) and got
    for name, disk in expected.items():
        assert got[name]["size_bytes"] == int(disk["size"])
        assert (got[name]["model"], got[name]["serial"]) == (disk["model"], disk["serial"])
        assert got[name]["smart_health"] in ("PASSED", "FAILED") or storage["unavailable"][f"{name}.smart_health"]


def test_smart_health_agrees_with_smartctl() -> None:
    """Where smartctl runs, the verdict (or its reason) is smartctl's own."""
    if shutil.which("smartctl") is None:
        pytest.fail("smartctl missing: scripts/setup.sh installs smartmontools")
    for drive in collect_storage()["devices"]:
        doc = json.loads(_run("smartctl", "-H", "-j", drive["path"]))
        status = doc.get("smart_status", {}).get("passed")
        if status is None:
            assert drive["smart_health"] is None
        else:
            assert drive["smart_health"] == ("PASSED" if status else "FAILED")


def test_parsers_on_recorded_lsblk_and_smartctl() -> None:
    """The recorded VM: vda (virtio, 256 GiB) and zram0 left out; smartctl's message becomes the reason."""
    drives = parse_lsblk((FIXTURES / "lsblk-drives-vm.json").read_text())
    assert [(d["name"], d["size_bytes"], d["kind"]) for d in drives] == [("vda", 274877906944, "virtual")]
    passed, reason = parse_smartctl_health((FIXTURES / "smartctl-no-device-type.json").read_text())
    assert passed is None and reason == "smartctl: /dev/vda: Unable to detect device type"
    assert parse_smartctl_health('{"smart_status": {"passed": false}}') == (False, None)


def test_controllers_match_sysfs_and_lspci() -> None:
    """One PCI entry per /sys/bus/pci/devices entry with sysfs ids; names equal lspci's."""
    pci = sorted(p.name for p in Path("/sys/bus/pci/devices").iterdir())
    devices = [d for d in collect_controllers()["devices"] if d["bus"] == "pci"]
    assert [d["slot"] for d in devices] == pci
    for dev in devices:
        sysfs = Path("/sys/bus/pci/devices") / dev["slot"]
        assert dev["vendor_id"] == sysfs.joinpath("vendor").read_text().strip()[2:]
        assert dev["product_id"] == sysfs.joinpath("device").read_text().strip()[2:]
    if shutil.which("lspci"):
        names = parse_lspci_vmm(_run("lspci", "-vmm", "-D"))
        assert all(d["name"] == names[d["slot"]]["Device"] for d in devices)


def test_lspci_parser_on_recorded_output() -> None:
    names = parse_lspci_vmm((FIXTURES / "lspci-vmm.txt").read_text())
    assert names["0000:00:02.0"]["Device"] == "Virtio 1.0 block device"
    assert names["0000:00:00.0"]["Class"] == "Host bridge"


def test_accounts_match_etc_passwd_and_group() -> None:
    """Every /etc/passwd line's name, uid, home and shell; every group with its members."""
    passwd = [line.split(":") for line in Path("/etc/passwd").read_text().splitlines() if line.count(":") == 6]
    accounts = collect_accounts()
    assert [(u["name"], u["uid"], u["home"], u["shell"]) for u in accounts["users"]] == \
        [(p[0], int(p[2]), p[5] or None, p[6] or None) for p in passwd]
    groups = [line.split(":") for line in Path("/etc/group").read_text().splitlines() if line.count(":") == 3]
    assert [(g["name"], g["gid"], g["members"]) for g in accounts["groups"]] == \
        [(g[0], int(g[2]), [m for m in g[3].split(",") if m]) for g in groups]
    root = accounts["users"][0]
    assert root["name"] == "root" and root["system"] is True


def test_passwd_and_group_parsers_skip_nis_and_garbage() -> None:
    users = parse_passwd("+::::::\nalice:x:1000:1000:Alice A,,,:/home/alice:/bin/zsh\nbad:x:y:1::/:/bin/sh\n")
    assert users == [{"name": "alice", "uid": 1000, "gid": 1000, "full_name": "Alice A", "home": "/home/alice",
                      "shell": "/bin/zsh", "system": False}]
    assert parse_group("sudo:x:27:alice,bob\n+:::\n") == [{"name": "sudo", "gid": 27, "members": ["alice", "bob"]}]


def _utmp(ut_type: int, user: str, line: str, host: str, seconds: int) -> bytes:
    return UTMP.pack(ut_type, 4242, line.encode(), b"ts/0", user.encode(), host.encode(), 0, 0, 0, seconds, 0,
                     b"\0" * 16)


def test_wtmp_parser_agrees_with_last(tmp_path: Path) -> None:
    """A wtmp built in glibc's layout: our parser and util-linux `last -f` read the same logins."""
    now = 1_700_000_000
    wtmp = tmp_path / "wtmp"
    wtmp.write_bytes(_utmp(7, "alice", "pts/1", "192.0.2.7", now - 3600) + _utmp(8, "", "pts/1", "", now - 60)
                     + _utmp(7, "bob", "tty2", "", now - 100 * 86400) + _utmp(2, "reboot", "~", "6.1", now - 7200))
    entries = list(parse_wtmp(wtmp.read_bytes()))
    assert [(e["user"], e["terminal"], e["host"]) for e in entries] == [("alice", "pts/1", "192.0.2.7"),
                                                                       ("bob", "tty2", None)]
    last = {line.split()[0]: line for line in _run("last", "-f", str(wtmp), "-w", "--time-format", "iso").splitlines()
            if line.strip() and not line.startswith("wtmp")}
    for entry in entries:
        assert entry["terminal"] in last[entry["user"]] and entry["time"].replace("Z", "+00:00") in last[entry["user"]]
    assert "192.0.2.7" in last["alice"]
    got = collect_logins(90, now=now, wtmp=wtmp, lastlog=tmp_path / "none", lastlog2=tmp_path / "none2",
                         passwd=tmp_path / "passwd")
    assert [e["user"] for e in got["entries"]] == ["alice"]  # bob is 100 days old
    assert got["last"] == [{"user": "alice", "terminal": "pts/1", "host": "192.0.2.7", "time": "2023-11-14T21:13:20Z"}]


def test_lastlog_parser_by_uid() -> None:
    data = b"\0" * LASTLOG_RECORD.size * 1000 + LASTLOG_RECORD.pack(1_700_000_000, b"pts/0", b"host.example")
    last = parse_lastlog(data, [("alice", 1000), ("bob", 1001)])
    assert list(last) == ["alice"] and last["alice"]["host"] == "host.example"


def test_logins_on_this_machine_within_window() -> None:
    """This machine's wtmp read whole: every entry is a USER_PROCESS record within 90 days."""
    logins = collect_logins()
    assert logins["retention_days"] == 90 and isinstance(logins["entries"], list)


def test_virtualization_matches_systemd_detect_virt() -> None:
    if shutil.which("systemd-detect-virt") is None:
        pytest.fail("systemd-detect-virt missing (package systemd)")
    virt = collect_virtualization()
    vm = _run("systemd-detect-virt", "--vm").strip()
    container = _run("systemd-detect-virt", "--container").strip()
    assert virt["vm"] == (None if vm in ("", "none") else vm)
    assert virt["container"] == (None if container in ("", "none") else container)
    assert virt["is_virtual"] == (virt["vm"] is not None or virt["container"] is not None)


def test_dns_matches_resolv_conf() -> None:
    servers = [line.split()[1] for line in Path("/etc/resolv.conf").read_text().splitlines()
               if line.startswith("nameserver") and len(line.split()) > 1]
    dns = collect_dns()
    if set(servers) <= {"127.0.0.53", "127.0.0.54"}:
        assert dns["stub"] == servers[0]
    else:
        assert dns["nameservers"] == servers and dns["source"] == "resolv.conf"


def test_dns_parsers() -> None:
    conf = parse_resolv_conf("# x\nnameserver 192.0.2.1\nnameserver 192.0.2.1\nsearch a.example b.example\n"
                             "options edns0\nnameserver 2001:db8::1 ; comment\n")
    assert conf == {"nameservers": ["192.0.2.1", "2001:db8::1"], "search": ["a.example", "b.example"],
                    "options": ["edns0"]}
    out = "Global: 1.1.1.1#cloudflare-dns.com\nLink 2 (eth0): 192.0.2.53 1.1.1.1\nLink 3 (wg0):\n"
    assert parse_resolvectl_dns(out) == ["1.1.1.1", "192.0.2.53"]


def test_cpu_identity_matches_proc_cpuinfo() -> None:
    first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}
    cpu = collect_cpu()
    if "vendor_id" in fields:
        assert cpu["vendor"] == fields["vendor_id"]
        assert (cpu["family"], cpu["model_number"], cpu["stepping"]) == \
            (int(fields["cpu family"]), int(fields["model"]), int(fields["stepping"]))
        assert cpu["microcode"] == fields.get("microcode")
    recorded = parse_cpu_identity((FIXTURES / "cpuinfo-x86.txt").read_text())
    assert recorded == {"vendor": "AuthenticAMD", "family": 26, "model_number": 2, "stepping": 1,
                        "microcode": "0x1000065"}
    arm = parse_cpu_identity("CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd0c\n")
    assert (arm["family"], arm["model_number"], arm["stepping"]) == (8, 0xD0C, 1)


def test_fqdn_is_hostname_f_not_localhost() -> None:
    """The FQDN is what `hostname -f` prints (FusionInventory's answer), not getfqdn's 'localhost'."""
    expected = _run("hostname", "-f").strip() or socket.gethostname()
    assert collect_identity()["fqdn"] == expected
    assert collect_identity()["fqdn"] != "localhost" or socket.gethostname() == "localhost"


def test_servicenow_payload_has_disks_contained_by_the_computer() -> None:
    inv = {"identity": {"hostname": "pc", "fqdn": "pc.corp.example"},
           "virtualization": {"vm": "kvm", "container": None, "is_virtual": True},
           "storage": {"devices": [{"name": "nvme0n1", "path": "/dev/nvme0n1", "size_bytes": 512110190592,
                                    "serial": "S4EWNX0R", "vendor": None, "model": "Samsung SSD 980",
                                    "transport": "nvme"}]}}
    payload = to_servicenow_ire("d1", inv)
    computer, disk = payload["items"]
    assert computer["values"]["virtual"] == "true" and computer["values"]["dns_domain"] == "corp.example"
    assert disk == {"className": "cmdb_ci_disk", "internal_id": "d1:disk:nvme0n1", "values": {
        "name": "nvme0n1", "device_id": "/dev/nvme0n1", "serial_number": "S4EWNX0R", "size_bytes": "512110190592",
        "disk_space": "512.11", "device_interface": "nvme", "short_description": "Samsung SSD 980"}}
    assert payload["relations"] == [{"parent": 0, "child": 1, "type": "Contains::Contained by"}]


def test_struct_layouts_match_glibc() -> None:
    """utmp is 384 bytes and lastlog 292 on Linux (glibc bits/utmp.h)."""
    assert (UTMP.size, LASTLOG_RECORD.size) == (384, 292)
    assert struct.calcsize("<i32s256s") == 292
