"""The first five minutes: ``helpline demo`` run as a newcomer would, on a machine without a desktop.

The demo runs as a subprocess (its own data directory, free ports, no ``DISPLAY``, and utmp
overridden to "nobody logged in", so only the demo's ``session_user`` can make the prompt appear).
The test reads what the demo prints — URL, username, password, TOTP secret, the device, the display
and the line that answers the prompt — logs in with that in Chromium, asks for control of the
device, answers the consent prompt on the demo's Xvfb with the printed xdotool line, sees the
sample window on the viewer's canvas, then stops the demo with SIGTERM: the demo exits 0 and no
process it started (server, agent, Xvfb, sample window, consent windows) survives.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyotp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.async_api import Page, async_playwright, expect

from agent.config import AgentConfig
from agent.sessions import USERS_ENV, logged_in_users
from common.config import load_config
from helpline.commands.demo import write_agent_config
from helpline.commands.demo_display import SAMPLE_BG, SAMPLE_GEOMETRY, XVFB_SIZE
from tests.harness import wait_until
from tests.procs import free_port

CHROMIUM = "/usr/bin/chromium"
BASE_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def _require_tools() -> None:
    """The demo's headless path needs these; missing ones fail the test (never a skip)."""
    for tool, package in (("Xvfb", "xvfb"), ("xdotool", "xdotool")):
        assert shutil.which(tool), f"{tool} is missing: apt-get install {package} (the demo test never skips)"
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium (the demo test never skips)"


def _newcomer_env() -> dict[str, str]:
    """This environment without a display and without Helpline settings; utmp says nobody is logged in."""
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY" and not k.startswith("HELPLINE_")}
    env["HELPLINE_LOGGED_IN_USERS"] = ""  # a host with a real login must not make the prompt appear by itself
    return env


def _wait_for_instructions(out: Path, demo: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = out.read_text(errors="replace")
        if "Press Ctrl-C to stop" in text:
            return text
        assert demo.poll() is None, f"the demo exited with {demo.returncode}:\n{text}"
        time.sleep(0.1)  # polling the demo's output file with a deadline
    raise AssertionError(f"the demo printed no instructions within {START_TIMEOUT_S:.0f}s:\n{out.read_text()}")


def _printed(text: str, pattern: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"the demo did not print {pattern!r}:\n{text}"
    return match.group(1)


def _spki_pin(server_pem: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the demo's server certificate: the one key Chromium accepts."""
    cert = x509.load_pem_x509_certificate(server_pem.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


async def _mean_colour(page: Page, x: int, y: int, size: int = 16) -> list[float] | None:
    """Mean RGB of a size×size block of the viewer's canvas at device coordinates (x, y); None before a frame."""
    result = await page.evaluate("""([x, y, s]) => { const c = document.querySelector('#screen');
        if (!c || c.width < 100) return null;
        const d = c.getContext('2d').getImageData(x, y, s, s).data; const sum = [0, 0, 0];
        for (let i = 0; i < d.length; i += 4) { sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2]; }
        return sum.map(v => v / (s * s)); }""", [x, y, size])
    return None if result is None else [float(v) for v in result]


def _close(colour: list[float] | None, hex_colour: str, tolerance: float = 10.0) -> bool:
    want = bytes.fromhex(hex_colour.lstrip("#"))
    return colour is not None and all(abs(a - b) <= tolerance for a, b in zip(colour, want, strict=True))


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_session_user_is_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only an explicit session_user (the demo's TOML, or HELPLINE_SESSION_USER) counts as logged in; the default
    leaves a display without a real login with nobody to ask."""
    monkeypatch.delenv("HELPLINE_SESSION_USER", raising=False)
    monkeypatch.setenv(USERS_ENV, "")  # utmp: nobody
    assert AgentConfig().session_user is None and logged_in_users(None) == []
    demo = load_config(AgentConfig, write_agent_config(tmp_path / "agent.toml", ":93"), section="agent")
    assert (demo.display, demo.session_user) == (":93", "demo")
    assert logged_in_users(demo.session_user) == ["demo"]
    desktop = load_config(AgentConfig, write_agent_config(tmp_path / "desktop.toml", None), section="agent")
    assert (desktop.display, desktop.session_user) == (None, None)
    monkeypatch.setenv("HELPLINE_SESSION_USER", "kiosk")
    monkeypatch.setenv(USERS_ENV, "alice")
    assert logged_in_users(load_config(AgentConfig, None, section="agent").session_user) == ["alice", "kiosk"]


async def test_demo_first_five_minutes(tmp_path: Path) -> None:
    """Start the demo, log in with what it prints, ask for control, Allow on its Xvfb, see the sample window, stop."""
    _require_tools()
    data, out = tmp_path / "demo-data", tmp_path / "demo.out"
    agent_port, console_port = free_port(), free_port()
    with out.open("wb") as sink:
        demo = subprocess.Popen([sys.executable, "-m", "helpline", "demo", "--data", str(data), "--agent-port",
                                 str(agent_port), "--console-port", str(console_port)],
                                stdout=sink, stderr=subprocess.STDOUT, env=_newcomer_env())
    family: list[psutil.Process] = []
    try:
        text = await asyncio.to_thread(_wait_for_instructions, out, demo)
        url = _printed(text, r"Open the console\s+(https://\S+)")
        username = _printed(text, r"^\s+username\s+(\S+)")
        password = _printed(text, r"^\s+password\s+(\S+)")
        secret = _printed(text, r"^\s+TOTP secret\s+(\S+)")
        device_id = _printed(text, r"\(device (\S+)\) → Control")
        hostname = _printed(text, r"Devices → (\S+) \(device")
        display = _printed(text, r"Accept the prompt on display (:\d+)")
        answer_line = _printed(text, r"^\s+(DISPLAY=:\d+ xdotool .+)$")
        assert url == f"https://localhost:{console_port}/"
        assert 'session_user = "demo"' in (data / "agent.toml").read_text()
        family = psutil.Process(demo.pid).children(recursive=True)

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                *BASE_ARGS, f"--ignore-certificate-errors-spki-list={_spki_pin(data / 'pki' / 'server.pem')}"])
            try:
                context = await browser.new_context(ignore_https_errors=False, viewport={"width": 1360, "height": 900})
                page = await context.new_page()
                await page.goto(url + "#/login")
                await page.fill("#username", username)
                await page.fill("#password", password)
                await page.fill("#totp", pyotp.TOTP(secret).now())
                await page.click("#login-submit")
                await page.wait_for_selector("#topbar:not([hidden])", timeout=15_000)

                device = page.locator("#device-rows a.hostname", has_text=hostname)
                await device.wait_for(timeout=30_000)  # the agent's first inventory names the device
                await device.click()
                await page.wait_for_url(re.compile(f"#/devices/{re.escape(device_id)}"), timeout=10_000)
                await page.click("#start-control")
                await page.fill("#session-reason", "first five minutes")
                await page.click("#session-confirm")
                banner = page.locator("#consent-banner")
                await expect(banner).to_have_attribute("data-state", "offered", timeout=10_000)

                # Answer like the device's user, with exactly the line the demo printed.
                env_part, command = answer_line.split(" ", 1)
                assert env_part == f"DISPLAY={display}"
                await asyncio.to_thread(subprocess.run, shlex.split(command), env={**os.environ, "DISPLAY": display},
                                        check=True, timeout=30, capture_output=True)
                await expect(banner).to_have_attribute("data-mode", "control", timeout=15_000)
                await expect(banner).to_contain_text("User allowed CONTROL")

                _width, height, left, top = SAMPLE_GEOMETRY
                inside = (left + 8, top + height - 24)  # the sample window's plain background, below its entry

                async def canvas_shows_sample_window() -> bool:
                    return _close(await _mean_colour(page, *inside), SAMPLE_BG)

                await wait_until(canvas_shows_sample_window, timeout=20, what="the sample window on the canvas")
                assert await page.evaluate("[document.querySelector('#screen').width,"
                                           " document.querySelector('#screen').height]") == list(XVFB_SIZE)
                outside = await _mean_colour(page, left // 2, top + height + 60)  # Xvfb's root, not the window
                assert outside is not None and not _close(outside, SAMPLE_BG), outside
                family = psutil.Process(demo.pid).children(recursive=True)  # now with the session indicator
            finally:
                await browser.close()

        assert len(family) >= 4, f"expected server, Xvfb, sample window and agent under the demo: {family}"
        demo.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(demo.wait, STOP_TIMEOUT_S)
        assert code == 0, out.read_text()

        def all_gone() -> bool:
            return not any(_alive(proc) for proc in family)

        await wait_until(all_gone, timeout=10, what="every process the demo started to exit")
        assert not Path(f"/tmp/.X11-unix/X{display.lstrip(':')}").exists()  # Xvfb removed its socket
        assert "stopping demo" in out.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=10)
        for proc in family:
            if _alive(proc):
                proc.kill()
        print(out.read_text(errors="replace"))
        for log in sorted((data / "logs").glob("*.log")) if (data / "logs").exists() else []:
            print(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-3000:]}")
