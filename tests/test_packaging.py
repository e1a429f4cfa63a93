"""Packaging and layering: what each install contains and what each layer may import.

The wheel is built once from a copy of this checkout, then installed into two clean virtualenvs
(no system site-packages): one with ``helpline[server]``, one with ``helpline[agent]``. A server
and an agent run from those installs — not from this checkout — and the agent comes online.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.version import __version__
from tests.procs import free_port, helpline, spawn, wait_for, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
VENDOR_JS = "console/static/vendor/uPlot.esm.js"
#: Distributions only the server needs, and only the agent needs (module names).
SERVER_ONLY = ("aiohttp", "asyncpg", "pyotp", "segno")
AGENT_ONLY = ("mss", "pynput", "numpy", "simplejpeg", "psutil", "websockets")
#: Never copied into the build: not part of the package, or machine-local.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "node_modules", "__pycache__", "*.egg-info", "build", "dist",
                                    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "demo-data",
                                    "tests", "docs", "benchmarks")
#: pip in the throw-away venvs: quiet, no prompts.
PIP = ("-m", "pip", "install", "-q", "--no-input", "--disable-pip-version-check", "--progress-bar", "off")
#: The installs must not see this checkout (an empty PYTHONPATH counts as unset).
CLEAN_ENV = {"PYTHONPATH": ""}
#: Dependency wheels kept between runs: pip's HTTP cache does not keep them on every machine, and
#: downloading numpy and the rest for two venvs on every run costs minutes. Filled on first use.
WHEELHOUSE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "helpline-tests" / "wheelhouse"


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside common/
                continue
            roots.add((node.module or "").split(".")[0])
    return roots


def test_common_is_the_bottom_layer() -> None:
    """common/ imports only the standard library: none of our packages, nothing an extra installs."""
    files = sorted((ROOT / "common").glob("*.py"))
    assert files, "common/ has no modules"
    for path in files:
        foreign = _imported_roots(path) - set(sys.stdlib_module_names) - {"__future__"}
        assert not foreign, f"{path.relative_to(ROOT)} imports {sorted(foreign)}"


# --- the wheel and two installs of it ---------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built by pip (PEP 517, isolated) from a copy of the checkout, as a release would be."""
    assert (ROOT / VENDOR_JS).is_file(), f"{VENDOR_JS} missing: run scripts/vendor-console.sh (scripts/setup.sh does)"
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                    "-w", str(work / "dist"), str(source)], check=True, timeout=300, capture_output=True)
    (built,) = (work / "dist").glob("helpline-*.whl")
    return built


@dataclass(frozen=True)
class Install:
    """A virtualenv with the wheel and one extra installed."""

    root: Path

    @property
    def helpline(self) -> tuple[str]:
        return (str(self.root / "bin" / "helpline"),)

    def python(self, code: str) -> str:
        # -I: neither the current directory (this checkout) nor PYTHON* variables on sys.path.
        done = subprocess.run([str(self.root / "bin" / "python"), "-I", "-c", code], capture_output=True, text=True,
                              check=True, timeout=60)
        return done.stdout

    def importable(self, modules: tuple[str, ...]) -> dict[str, bool]:
        code = f"import importlib.util, json; print(json.dumps({{m: importlib.util.find_spec(m) is not None " \
               f"for m in {list(modules)!r}}}))"
        result: dict[str, bool] = json.loads(self.python(code))
        return result


def _install_offline(venvs: dict[str, Install], wheel: Path, logs: Path) -> bool:
    """pip install the wheel with each venv's extra, all at once, from the wheelhouse only."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for extra, install in venvs.items():
            with (logs / f"pip-{extra}.log").open("ab") as log:
                procs[extra] = subprocess.Popen(
                    [str(install.root / "bin" / "python"), *PIP, "--no-index", "--find-links", str(WHEELHOUSE),
                     f"{wheel}[{extra}]"], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **CLEAN_ENV})
        return all(proc.wait(timeout=300) == 0 for proc in procs.values())
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def installs(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Install]:
    """``server`` and ``agent``: clean venvs (no system site-packages) with the wheel and that extra."""
    base = tmp_path_factory.mktemp("venvs")
    venvs = {extra: Install(base / extra) for extra in ("server", "agent")}
    for install in venvs.values():
        subprocess.run([sys.executable, "-m", "venv", str(install.root)], check=True, timeout=120)
    if not _install_offline(venvs, wheel, base):
        # First run on this machine, or the dependencies changed: fetch them into the wheelhouse.
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w",
                        str(WHEELHOUSE), f"{wheel}[agent,server]"], check=True, timeout=540, capture_output=True)
        for ours in WHEELHOUSE.glob("helpline-*.whl"):
            ours.unlink()
        assert _install_offline(venvs, wheel, base), "\n".join(p.read_text() for p in base.glob("pip-*.log"))
    return venvs


def test_wheel_contains_the_vendored_console_javascript(wheel: Path) -> None:
    """The console's vendored uPlot (git-ignored, made by npm) is in the wheel; so are common/ and the version."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert VENDOR_JS in names and "console/static/vendor/uPlot.min.css" in names
        assert archive.read(VENDOR_JS) == (ROOT / VENDOR_JS).read_bytes()
        assert {"console/index.html", "common/version.py", "helpline/cli.py"} <= names
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        lines = archive.read(metadata).decode().splitlines()
    assert f"Version: {__version__}" in lines
    base = [line for line in lines if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert sorted(line.split()[1].split(">")[0] for line in base) == ["cryptography", "msgspec"]


@pytest.mark.timeout(600)
def test_agent_install_has_no_server_dependencies(installs: dict[str, Install], tmp_path: Path) -> None:
    """helpline[agent] brings the agent's libraries and none of the server's; server commands say what is missing."""
    agent = installs["agent"]
    assert agent.python("import helpline; print(helpline.__file__)").startswith(str(agent.root))
    have = agent.importable(SERVER_ONLY + AGENT_ONLY)
    assert not [m for m in SERVER_ONLY if have[m]], have
    assert all(have[m] for m in AGENT_ONLY), have
    # The device checks passkey approvals and a signed schedule's occurrences itself.
    assert all(agent.importable(("fido2", "cronsim")).values())
    for argv in (["--help"], ["agent", "--help"], ["agent", "run", "--help"], ["admin", "--help"]):
        helpline(*argv, command=agent.helpline, env=CLEAN_ENV)
    refused = helpline("server", "--data", str(tmp_path), command=agent.helpline, env=CLEAN_ENV, check=False)
    assert refused.returncode == 2 and "install helpline[server]" in refused.stderr, refused.stderr


@pytest.mark.timeout(600)
def test_server_install_has_no_agent_dependencies(installs: dict[str, Install], tmp_path: Path) -> None:
    """helpline[server] brings the server's libraries and none of the agent's; agent commands say what is missing."""
    server = installs["server"]
    assert server.python("import helpline; print(helpline.__file__)").startswith(str(server.root))
    have = server.importable(SERVER_ONLY + AGENT_ONLY)
    assert not [m for m in AGENT_ONLY if have[m]], have
    assert all(have[m] for m in SERVER_ONLY), have
    for argv in (["--help"], ["server", "--help"], ["admin", "task", "--help"], ["agent", "enroll", "--help"]):
        helpline(*argv, command=server.helpline, env=CLEAN_ENV)
    (tmp_path / "agent").mkdir()
    refused = helpline("agent", "run", "--state", str(tmp_path / "agent"), command=server.helpline, env=CLEAN_ENV,
                       check=False)
    assert refused.returncode == 2 and "install helpline[agent]" in refused.stderr, refused.stderr
    refused = helpline("viewer", "ws://127.0.0.1:9/api/v1/sessions/x/stream", command=server.helpline,
                       env=CLEAN_ENV, check=False)
    assert refused.returncode == 2 and "install helpline[agent]" in refused.stderr, refused.stderr


@pytest.mark.timeout(600)
def test_server_and_agent_run_from_their_own_installs(installs: dict[str, Install], tmp_path: Path) -> None:
    """certs, server and token from the server install; enroll and run from the agent install; it comes online."""
    server_cli, agent_cli = installs["server"].helpline, installs["agent"].helpline
    data = tmp_path / "data"
    helpline("certs", "init", "--dir", str(data / "pki"), "--server-name", "localhost", "--discard-root",
             command=server_cli, env=CLEAN_ENV)
    agent_port, console_port = free_port(), free_port()
    # The server and the admin commands read the same settings (the token names the console URL).
    env = {**CLEAN_ENV, "HELPLINE_DATA_DIR": str(data), "HELPLINE_HOST": "127.0.0.1",
           "HELPLINE_AGENT_PORT": str(agent_port), "HELPLINE_CONSOLE_PORT": str(console_port)}
    with spawn("server", log=tmp_path / "server.log", command=server_cli, env=env) as server:
        wait_for_port(console_port, server)
        wait_for_port(agent_port, server)
        # The installed server serves the console's vendored JavaScript from the wheel.
        context = ssl.create_default_context(cafile=str(data / "pki" / "ca.pem"))
        with urllib.request.urlopen(f"https://localhost:{console_port}/static/vendor/uPlot.esm.js",
                                    context=context, timeout=10) as response:
            assert response.read() == (ROOT / VENDOR_JS).read_bytes()

        line = helpline("admin", "token", "create", "--group", "lab", command=server_cli, env=env).stdout.split()
        assert line[:4] == ["helpline", "agent", "enroll", f"https://localhost:{console_port}"]
        state = tmp_path / "agent"
        helpline("agent", "enroll", line[3], line[4], "--ca-sha256", line[6], "--state", str(state),
                 command=agent_cli, env=CLEAN_ENV)
        device_id = json.loads((state / "agent.json").read_text())["device_id"]
        with spawn("agent", "run", "--state", str(state), log=tmp_path / "agent.log", command=agent_cli,
                   env=CLEAN_ENV) as agent:

            def device() -> dict[str, object]:
                rows = json.loads(helpline("admin", "device", "list", "--json", command=server_cli, env=env).stdout)
                return next((r for r in rows if r["id"] == device_id), {})

            wait_for(lambda: device().get("status") == "online" or agent.poll() is not None, timeout=60,
                     what="the agent online")
            assert agent.poll() is None, (tmp_path / "agent.log").read_text()
            row = device()
            assert row["status"] == "online" and row["group"] == "lab" and row["agent_version"] == __version__
    assert "Traceback" not in (tmp_path / "agent.log").read_text()
    assert "Traceback" not in (tmp_path / "server.log").read_text()
