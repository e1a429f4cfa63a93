"""The .deb on this machine (root, CI): install, enroll from the deployed config, connect, doctor, remove, purge.

scripts/build-deb builds the package from this checkout; ``dpkg -i`` installs it on this
system for real. systemd is not PID 1 here, so the service's ``ExecStartPre`` and ``ExecStart``
lines are read from the installed unit and run as systemd would run them, against a real server
from this checkout. Every path the package touches must be absent before the test (it refuses to
run over an existing installation) and is absent again after ``dpkg -P``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import free_port, helpline, spawn, wait_for, wait_for_port
from tests.test_packaging import WHEELHOUSE

#: Run alone, after the parallel pass (scripts/test): dpkg -i of the package and its system units.
pytestmark = pytest.mark.serial

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "helpline-agent"
UNIT = Path("/usr/lib/systemd/system/helpline-agent.service")
USER_UNIT = Path("/usr/lib/systemd/user/helpline-session.service")
AUTOSTART = Path("/etc/xdg/autostart/helpline-session.desktop")
PREFIX = Path("/opt/helpline-agent")
STATE = Path("/var/lib/helpline-agent")
CONFIG_DIR = Path("/etc/helpline")
#: Where 'systemctl enable' (run by postinst) puts the units' symlinks.
WANTS = (Path("/etc/systemd/system/multi-user.target.wants/helpline-agent.service"),
         Path("/etc/systemd/user/graphical-session.target.wants/helpline-session.service"))
#: Everything the package installs or creates, besides the state directory and the deployed config.
PACKAGE_PATHS = (UNIT, USER_UNIT, AUTOSTART, PREFIX, Path("/usr/bin/helpline"),
                 Path("/usr/share/doc/helpline-agent"), *WANTS)
INSTALLED = [str(PREFIX / "bin" / "helpline")]
#: The native PipeWire reader (agent/screen/wayland/native.py looks beside the interpreter).
PWCAST = str(PREFIX / "bin" / "helpline-pwcast")


def _installed() -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PACKAGE], capture_output=True, text=True)
    return done.returncode == 0 and "not-installed" not in done.stdout


def _status() -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PACKAGE], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else "unknown"


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, built from this checkout (dependencies from the packaging tests' wheelhouse)."""
    assert os.geteuid() == 0, "the .deb test installs a package: run it as root (CI does)"
    assert shutil.which("dpkg-deb") and shutil.which("systemd-analyze"), "needs dpkg-deb and systemd-analyze"
    out = tmp_path_factory.mktemp("deb")
    done = subprocess.run([str(ROOT / "scripts" / "build-deb"), "--out", str(out), "--wheelhouse", str(WHEELHOUSE)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("helpline-agent_*.deb")
    return built


@pytest.fixture
def clean_system() -> Iterator[None]:
    """Refuse to run over an existing installation; purge whatever the test left, whatever happened."""
    present = [str(p) for p in (*PACKAGE_PATHS, STATE, CONFIG_DIR) if p.exists() or p.is_symlink()]
    if _installed() or present:
        pytest.fail(f"{PACKAGE} or its files are already on this machine ({present}); not touching them")
    try:
        yield
    finally:
        if _installed():
            subprocess.run(["dpkg", "-P", PACKAGE], capture_output=True, timeout=120)
        for path in (STATE, CONFIG_DIR):
            shutil.rmtree(path, ignore_errors=True)


def _unit_lines(unit: Path, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith(f"{key}=")]


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    # As systemd would: no PYTHONPATH or virtualenv of ours leaks in, working directory /.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/", timeout=120, **kwargs)  # type: ignore[call-overload, no-any-return]


#: What the Wayland desktop needs besides the package's own files: zenity for the native consent prompt and
#: indicator without XWayland (agent/consent/zenity.py), gst-launch-1.0, pipewiresrc and videoconvert for the
#: screen reader (agent/screen/wayland/frames.py). Recommended, not required: an X11 or headless device works
#: without them, and apt installs recommendations by default.
WAYLAND_RECOMMENDS = ("zenity", "gstreamer1.0-tools", "gstreamer1.0-pipewire", "gstreamer1.0-plugins-base")


def _control_field(deb: Path, name: str) -> list[str]:
    done = subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, timeout=60, check=True)
    return [part.strip().split()[0] for part in done.stdout.split(",") if part.strip()]


@pytest.mark.timeout(1000)
def test_deb_recommends_what_the_wayland_desktop_needs(deb: Path) -> None:
    """The control file recommends zenity and the GStreamer pieces of the Wayland screen reader; none is a Depends."""
    recommends, depends = _control_field(deb, "Recommends"), _control_field(deb, "Depends")
    assert set(WAYLAND_RECOMMENDS) <= set(recommends), recommends
    assert not set(WAYLAND_RECOMMENDS) & set(depends), depends


@pytest.mark.timeout(1000)
def test_deb_carries_the_native_pipewire_reader(deb: Path) -> None:
    """helpline-pwcast is compiled into the package beside the interpreter, and the package depends on the
    PipeWire library it links."""
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, timeout=60, check=True)
    entry = next((line for line in listing.stdout.splitlines() if line.endswith(f".{PWCAST}")), "")
    assert entry.startswith("-rwxr-xr-x root/root"), listing.stdout[-2000:]
    assert "libpipewire-0.3-0" in _control_field(deb, "Depends")


@pytest.mark.timeout(1500)
def test_deb_installs_enrolls_connects_and_removes_cleanly(deb: Path, clean_system: None, tmp_path: Path) -> None:
    """dpkg -i; units verify; the service's own command lines enroll from /etc/helpline/agent.toml and connect;
    doctor passes (and fails on a loosened state directory); dpkg -r keeps only the state; dpkg -P purges."""
    from tests.authority_helpers import make_org

    done = subprocess.run(["dpkg", "-i", str(deb)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _status() == "install ok installed"
    for path in (UNIT, USER_UNIT, AUTOSTART, PREFIX / "bin" / "helpline", *WANTS):
        assert path.exists(), f"{path} not installed"
    info = STATE.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == 0
    # The unit files, as systemd reads them (the user unit with a runtime directory of its own).
    verify = _run(["systemd-analyze", "verify", str(UNIT)])
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verify = subprocess.run(["systemd-analyze", "--user", "verify", str(USER_UNIT)], capture_output=True, text=True,
                            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}, timeout=60)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    # The agent's Wayland reader finds the packaged helpline-pwcast and it runs (it answers --version).
    found = _run([str(PREFIX / "bin" / "python3"), "-IB", "-c", "from agent.screen.wayland.native import native_reader;"
                  " choice = native_reader({}); print(choice.binary or choice.reason)"])
    assert found.stdout.strip() == PWCAST, found.stdout + found.stderr
    # The command the user unit and the autostart entry run exists, and refuses to run as root.
    helper = _run([*INSTALLED, "agent", "session-helper"])
    assert helper.returncode == 1 and "never as root" in helper.stderr, helper.stderr

    # A real server from this checkout.
    data = tmp_path / "data"
    helpline("certs", "init", "--dir", str(data / "pki"), "--server-name", "localhost", "--discard-root")
    agent_port, console_port = free_port(), free_port()
    env = {"HELPLINE_DATA_DIR": str(data), "HELPLINE_HOST": "127.0.0.1", "HELPLINE_AGENT_PORT": str(agent_port),
           "HELPLINE_CONSOLE_PORT": str(console_port)}
    with spawn("server", log=tmp_path / "server.log", env=env) as server:
        wait_for_port(console_port, server, timeout=60)
        wait_for_port(agent_port, server, timeout=60)
        line = helpline("admin", "token", "create", "--group", "fleet", env=env).stdout.split()
        url, token, ca_sha256 = line[3], line[4], line[6]
        root = make_org().root.fingerprint
        # What the administrator deploys.
        (CONFIG_DIR / "enrollment-token").write_text(token + "\n")
        os.chmod(CONFIG_DIR / "enrollment-token", 0o600)
        (CONFIG_DIR / "agent.toml").write_text(
            f'[agent]\ntrust_root_sha256 = "{root}"\n\n'
            f'[enrollment]\nserver_url = "{url}"\nca_sha256 = "{ca_sha256}"\n'
            f'token_file = "{CONFIG_DIR / "enrollment-token"}"\n')

        (pre,) = _unit_lines(UNIT, "ExecStartPre")
        (start,) = _unit_lines(UNIT, "ExecStart")
        enrolled = _run(shlex.split(pre))
        assert enrolled.returncode == 0 and "enrolled as device" in enrolled.stdout, enrolled.stderr
        again = _run(shlex.split(pre))  # every later start: nothing to do, the token is not spent again
        assert again.returncode == 0 and "already enrolled" in again.stdout, again.stderr
        device_id = json.loads((STATE / "agent.json").read_text())["device_id"]
        assert json.loads((STATE / "agent.json").read_text())["trust_root_sha256"] == root
        assert stat.S_IMODE((STATE / "device.key").stat().st_mode) == 0o600

        argv = shlex.split(start)
        assert argv[0] == INSTALLED[0]
        with spawn(*argv[1:], log=tmp_path / "agent.log", command=argv[:1],
                   env={"PYTHONPATH": "", "VIRTUAL_ENV": ""}) as agent:

            def device() -> dict[str, object]:
                rows = json.loads(helpline("admin", "device", "list", "--json", env=env).stdout)
                return next((r for r in rows if r["id"] == device_id), {})

            wait_for(lambda: device().get("status") == "online" or agent.poll() is not None, timeout=90,
                     what="the installed agent online")
            assert agent.poll() is None, (tmp_path / "agent.log").read_text()
            assert device()["group"] == "fleet"

            doctor = _run([*INSTALLED, "agent", "doctor"])
            assert doctor.returncode == 0, doctor.stdout + doctor.stderr
            for name in ("config", "state directory", "enrolled", "org TLS root", "trust root", "certificate",
                         "server", "clock"):
                assert f"✓ {name}:" in doctor.stdout, doctor.stdout
            assert "- session helper: installed" in doctor.stdout
            os.chmod(STATE, 0o755)
            try:
                loose = _run([*INSTALLED, "agent", "doctor"])
            finally:
                os.chmod(STATE, 0o700)
            assert loose.returncode == 1 and "✗ state directory:" in loose.stdout and "want 0700" in loose.stdout
    assert "Traceback" not in (tmp_path / "agent.log").read_text()

    done = subprocess.run(["dpkg", "-r", PACKAGE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    left = [str(p) for p in PACKAGE_PATHS if p.exists() or p.is_symlink()]
    assert not left, f"dpkg -r left {left}"
    assert (STATE / "device.key").exists(), "removal must keep the device's identity"
    assert (CONFIG_DIR / "agent.toml").exists(), "removal keeps the deployed configuration"
    assert _status() == "deinstall ok config-files"

    done = subprocess.run(["dpkg", "-P", PACKAGE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not CONFIG_DIR.exists() and not STATE.exists()
    assert not _installed()
