"""Self-update's pure parts: wave planning and decisions, the archive checks, the messages."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import msgspec
import pytest

from agent.update import install
from agent.update.download import Source
from protocol import codec
from protocol.errors import InvalidMessage
from protocol.update import UpdateStatus, artifact_path, is_artifact_path
from server.updates import waves
from server.updates.waves import Target


def test_percent_waves_are_cumulative_stable_and_never_empty() -> None:
    """1/10/50/100 % of 200 devices: 2, 18, 80, 100 per wave, the same for the same seed; 3 devices: no empty wave."""
    devices = [f"dev-{i}" for i in range(200)]
    plan = waves.by_percent(devices, [1, 10, 50, 100], "seed")
    sizes = [sum(1 for w in plan.values() if w == i) for i in range(4)]
    assert sizes == [2, 18, 80, 100] and set(plan) == set(devices)
    assert plan == waves.by_percent(list(reversed(devices)), [1, 10, 50, 100], "seed")
    assert plan != waves.by_percent(devices, [1, 10, 50, 100], "other seed")
    small = waves.by_percent(["a", "b", "c"], [1, 10, 50, 100], "s")
    assert sorted(small.values()) == [0, 1, 2]


@pytest.mark.parametrize("percents", [[], [50], [10, 10, 100], [50, 20, 100], [0, 100], [100, 101]])
def test_bad_percentages_are_refused(percents: list[int]) -> None:
    with pytest.raises(ValueError):
        waves.by_percent(["a"], percents, "s")


def test_group_waves_take_only_the_named_groups() -> None:
    plan = waves.by_groups([("a", "pilot"), ("b", "lab"), ("c", "office"), ("d", "other")], [["pilot"], ["lab", "office"]])
    assert plan == {"a": 0, "b": 1, "c": 1}
    with pytest.raises(ValueError, match="in two waves"):
        waves.by_groups([], [["lab"], ["lab"]])


@pytest.mark.parametrize(("wave", "threshold", "states", "action", "reason"), [
    (0, 0.0, [(0, "committed"), (1, "pending")], "advance", ""),
    (0, 0.0, [(0, "installed"), (1, "pending")], "wait", ""),
    (0, 0.0, [(0, "committed"), (0, "rolled_back"), (1, "pending")], "halt", "rolled back: why"),
    (0, 0.0, [(0, "committed"), (0, "refused"), (1, "pending")], "halt", "1 of 2 released devices refused or failed"),
    (0, 0.5, [(0, "committed"), (0, "refused"), (1, "pending")], "advance", ""),
    (1, 0.5, [(0, "committed"), (0, "failed"), (1, "committed")], "done", ""),
    (1, 0.9, [(0, "committed"), (1, "pending"), (1, "rolled_back")], "halt", "rolled back"),
    (0, 0.0, [], "done", ""),
])
def test_a_wave_moves_on_only_when_it_committed_and_nothing_rolled_back(
        wave: int, threshold: float, states: list[tuple[int, str]], action: str, reason: str) -> None:
    targets = [Target(f"d{i}", w, s, "why") for i, (w, s) in enumerate(states)]
    decision = waves.decide(wave, max((w for w, _ in states), default=0), threshold, targets)
    assert decision.action == action and reason in decision.reason


def _tar(path: Path, members: dict[str, bytes], *, link: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as out:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo("helpline/evil")
            info.type, info.linkname = tarfile.SYMTYPE, link
            out.addfile(info)
    return path


AGENT = {"helpline/cli.py": b"def main(): return 0\n", "common/version.py": b'__version__ = "2.0.0"\n'}


def test_an_agent_tarball_and_wheel_unpack_into_their_version_directory(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar.gz", AGENT)
    install.unpack(archive, "a.tar.gz", "2.0.0", tmp_path / "versions" / "2.0.0")
    assert (tmp_path / "versions" / "2.0.0" / "helpline" / "cli.py").read_bytes() == AGENT["helpline/cli.py"]
    wheel = tmp_path / "helpline-2.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as out:
        for name, data in AGENT.items():
            out.writestr(name, data)
        out.writestr("helpline-2.0.0.dist-info/METADATA", "Name: helpline\n")
    install.unpack(wheel, wheel.name, "2.0.0", tmp_path / "w" / "2.0.0")
    assert (tmp_path / "w" / "2.0.0" / "common" / "version.py").exists()
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["2.0.0"], "no staging directory left"


@pytest.mark.parametrize("pep706", [True, False], ids=["data-filter", "without-filters"])
def test_a_tarball_unpacks_without_the_archives_owners_or_risky_mode_bits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pep706: bool) -> None:
    """Modes and owners in an agent tarball do not reach the disk: setuid and group/other write bits go, owners are
    ours — with tarfile's "data" filter, and by hand on an interpreter from before it (Debian 12's python3, the
    .deb's, is 3.11.2: ``extractall(filter=…)`` would raise TypeError there and no update could install)."""
    if not pep706:
        monkeypatch.delattr(tarfile, "data_filter")
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as out:
        for name, data in AGENT.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), 0o4777, 4242, 4242
            out.addfile(info, io.BytesIO(data))
        tool = tarfile.TarInfo("helpline/tool.sh")
        tool.size, tool.mode = 3, 0o744
        out.addfile(tool, io.BytesIO(b"#!\n"))
    into = tmp_path / "versions" / "2.0.0"
    install.unpack(archive, "a.tar.gz", "2.0.0", into)
    cli = (into / "helpline" / "cli.py").stat()
    assert stat.S_IMODE(cli.st_mode) == 0o755 and (cli.st_uid, cli.st_gid) == (os.getuid(), os.getgid())
    assert stat.S_IMODE((into / "helpline" / "tool.sh").stat().st_mode) == 0o744


@pytest.mark.parametrize(("members", "link", "reason"), [
    ({**AGENT, "../escape.py": b"x"}, None, "would land outside"),
    ({**AGENT, "/etc/cron.d/x": b"x"}, None, "would land outside"),
    (AGENT, "/etc/shadow", "is not a plain file"),
    ({"common/version.py": b'__version__ = "2.0.0"\n'}, None, "holds no agent"),
    ({**AGENT, "common/version.py": b'__version__ = "9.9.9"\n'}, None, "declares version '9.9.9'"),
])
def test_archives_that_would_write_elsewhere_or_are_not_the_signed_agent_are_refused(
        tmp_path: Path, members: dict[str, bytes], link: str | None, reason: str) -> None:
    archive = _tar(tmp_path / "a.tar.gz", members, link=link)
    with pytest.raises(install.InstallRefused, match=reason):
        install.unpack(archive, "a.tar.gz", "2.0.0", tmp_path / "versions" / "2.0.0")
    assert not (tmp_path / "versions" / "2.0.0").exists() and not (tmp_path / "escape.py").exists()
    assert not list((tmp_path / "versions").iterdir())


def test_a_zip_member_outside_a_zip_link_and_a_garbage_archive_are_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "x.whl"
    with zipfile.ZipFile(wheel, "w") as out:
        out.writestr("../../x.py", "x")
    with pytest.raises(install.InstallRefused, match="would land outside"):
        install.unpack(wheel, wheel.name, "2.0.0", tmp_path / "v" / "2.0.0")
    linked = tmp_path / "l.whl"
    with zipfile.ZipFile(linked, "w") as out:
        info = zipfile.ZipInfo("helpline/cli.py")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        out.writestr(info, "/etc/shadow")
    with pytest.raises(install.InstallRefused, match="is not a plain file"):
        install.unpack(linked, linked.name, "2.0.0", tmp_path / "v" / "2.0.0")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive")
    with pytest.raises(install.InstallRefused, match="not a readable archive"):
        install.unpack(junk, junk.name, "2.0.0", tmp_path / "v" / "2.0.0")
    assert not install.supported("helpline.deb") and install.supported("helpline-2.0.0-py3-none-any.whl")


def test_messages_are_validated_and_the_artifact_path_is_content_addressed() -> None:
    good = UpdateStatus(version="0.2.0", state="committed", running="0.2.0", rollout_id="upd_1")
    assert codec.decode(codec.encode(good)) == good
    raw = msgspec.json.decode(codec.encode(good))
    for field, value in (("state", "installed-ish"), ("version", "../../x"), ("reason", "x" * 300)):
        with pytest.raises(InvalidMessage):
            codec.decode(msgspec.json.encode({**raw, field: value}))
    assert is_artifact_path(artifact_path("ab" * 32))
    assert not is_artifact_path("/agent/updates/../../etc/passwd") and not is_artifact_path("https://evil/x")
    assert Source.from_agent_url("wss://helpline.example.org:8443/agent") == Source("helpline.example.org", 8443)
    with pytest.raises(ValueError):
        Source.from_agent_url("http://evil.example/agent")


def test_a_real_wheel_of_this_checkout_installs_and_runs_from_its_version_directory(tmp_path: Path) -> None:
    """What README "Updating agents" says to build: ``pip wheel`` of the packages (here declaring 0.2.0, made
    as scripts/build-deb makes its wheel) unpacks into versions/0.2.0, and the launcher's boot line runs it from
    there, ahead of the interpreter's own helpline."""
    import shutil
    import subprocess
    import sys

    from agent.update.launcher import BOOT

    checkout = Path(__file__).resolve().parent.parent
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(checkout / name, source / name)
    for package in ("common", "protocol", "certs", "agent", "server", "console", "helpline"):
        shutil.copytree(checkout / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "common" / "version.py").write_text('__version__ = "0.2.0"\n')
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("helpline-0.2.0-*.whl")
    target = tmp_path / "versions" / "0.2.0"
    install.unpack(wheel, wheel.name, "0.2.0", target)
    probe = BOOT.replace("from helpline.cli import main; sys.exit(main())",
                         "import common.version, helpline.cli; print(common.version.__version__, helpline.cli.__file__)")
    ran = subprocess.run([sys.executable, "-I", "-B", "-c", probe, str(target)], capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    version, where = ran.stdout.split()
    assert version == "0.2.0" and Path(where).is_relative_to(target)
