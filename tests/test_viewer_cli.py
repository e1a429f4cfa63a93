"""``helpline viewer``: a real CLI process watching a relayed session (real server, agent, Xvfb)."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from agent.config import AgentConfig
from agent.consent.scripted import ScriptedConsentUI
from agent.screen.encoder import decode
from certs import tls
from helpline.cli import main as helpline_main
from helpline.commands.viewer import UsageError, origin_of, stream_url
from protocol.stream import Encoding
from server.accounts import admin
from server.app import HelplineServer
from tests.harness import console_url, enroll_agent, running_agent, running_server
from tests.test_screen_support import tk_app
from tests.test_session_helpers import configure_agent
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]


async def technician_token(server: HelplineServer, name: str = "ann") -> str:
    """A real account (technician on group 'lab') and its API token, made with the accounts module."""
    await admin.create_group(server.db, "lab", actor="test")
    await admin.create_account(server.db, name, "technician", actor="test")
    await admin.assign_rights(server.db, name, "lab", None, actor="test")
    return (await admin.create_token(server.db, name, "viewer-test", None, actor="test")).token


async def request_session(server: HelplineServer, device_id: str, token: str) -> str:
    ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
    async with aiohttp.ClientSession() as http, http.post(
        f"{console_url(server)}/api/v1/devices/{device_id}/sessions", json={"mode": "view", "reason": "viewer cli"},
        ssl=ctx, headers={"Authorization": f"Bearer {token}"},
    ) as response:
        body = await response.json(content_type=None)
        assert response.status == 201, body
        return f"wss://localhost:{server.console_port}{body['stream_url']}"


async def run_viewer(*args: str, token: str | None, timeout: float = 30) -> tuple[int, str, str]:
    """``helpline viewer …`` as a child process (async: this loop keeps serving the in-process server)."""
    env = {k: v for k, v in os.environ.items() if k != "HELPLINE_TOKEN"}
    if token is not None:
        env["HELPLINE_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "helpline", "viewer", *args, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def read_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    w, h = struct.unpack(">II", data[16:24])
    return decode(Encoding.PNG, data, w, h)


async def test_snapshot_and_stats_through_the_relay(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Through the real relay the CLI saves a PNG of what is on screen, and prints per-second stats lines."""
    async with running_server(tmp_path / "srv") as server, tk_app(xvfb.display):
        token = await technician_token(server)
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0)
        ui = ScriptedConsentUI([True, True])
        async with running_agent(state, config, setup=configure_agent(xvfb.display, ui)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            url = await request_session(server, state.device_id, token)
            snapshot = tmp_path / "screen.png"
            code, out, err = await run_viewer(url, "--ca", str(server.pki.ca_pem), "--snapshot", str(snapshot),
                                              "--after", "2", token=token)
            assert code == 0, err
            assert f"saved {snapshot} (1024x768)" in out
            pixels = read_png(snapshot)
            assert pixels.shape == (768, 1024, 3)
            assert np.abs(pixels[20:130, 20:180].astype(int) - [0, 0, 255]).max() < 40  # the red block (BGR)
            assert np.abs(pixels[20:130, 220:380].astype(int) - [0, 255, 0]).max() < 40  # the green one

            url = await request_session(server, state.device_id, token)
            code, out, err = await run_viewer(url, "--data", str(tmp_path / "srv"), "--seconds", "1.5", "--json",
                                              token=token)
            assert code == 0, err
            lines = [json.loads(line) for line in out.splitlines()]
            assert lines and lines[0]["size"] == "1024x768" and lines[-1]["updates"] >= 1
            assert all(line["errors"] == 0 for line in lines)


async def test_refusals_are_reported_with_the_servers_reason(tmp_path: Path) -> None:
    """A wrong token (401), a foreign Origin (403 bad_origin) and an untrusted CA each exit 1 with a clear message."""
    async with running_server(tmp_path / "srv") as server:
        token = await technician_token(server)
        url = f"wss://localhost:{server.console_port}/api/v1/sessions/s-0000/stream"
        ca = str(server.pki.ca_pem)
        code, _out, err = await run_viewer(url, "--ca", ca, "--snapshot", str(tmp_path / "x.png"), token="hl_wrong")
        assert code == 1 and "401" in err and not (tmp_path / "x.png").exists()
        code, _out, err = await run_viewer(url, "--ca", ca, "--origin", "https://evil.example", token=token)
        assert code == 1 and "403 bad_origin" in err
        code, _out, err = await run_viewer(url, "--ca", str(_foreign_ca(tmp_path)), token=token)
        assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in err


def _foreign_ca(tmp_path: Path) -> Path:
    """The CA certificate of another, unrelated org."""
    from certs.pki import init_pki

    init_pki(tmp_path / "foreign", ["localhost"])
    return tmp_path / "foreign" / "ca.pem"


def test_wss_without_a_ca_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """wss:// with no CA to verify against is refused before any connection (status 2), never unverified."""
    assert helpline_main(["viewer", "wss://localhost:1/api/v1/sessions/s-1/stream"]) == 2
    assert "--ca" in capsys.readouterr().err


def test_urls_are_normalised_and_origins_derived() -> None:
    """https:// becomes wss://, the Origin is the console's own, and non-websocket URLs are refused."""
    assert stream_url("https://h.example:8444/api/v1/sessions/s-1/stream") == \
        "wss://h.example:8444/api/v1/sessions/s-1/stream"
    assert origin_of("wss://h.example:8444/api/v1/sessions/s-1/stream") == "https://h.example:8444"
    assert origin_of("ws://127.0.0.1:5000/") == "http://127.0.0.1:5000"
    with pytest.raises(UsageError):
        stream_url("ftp://h.example/x")


async def test_toolkit_steps_from_the_cli(tmp_path: Path, xvfb: XvfbHandle,  # noqa: F811
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``helpline viewer --say … --send FILE --fetch PATH --json``: the line and the file reach the device (hash in
    the output equals the file's); a fetch nobody can approve is reported and makes the exit status 1."""
    import hashlib

    downloads = tmp_path / "Downloads"
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(downloads))
    payload = tmp_path / "notes.txt"
    payload.write_bytes(os.urandom(300 * 1024))
    async with running_server(tmp_path / "srv") as server:
        token = await technician_token(server)
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0)
        setup = configure_agent(xvfb.display, ScriptedConsentUI([True]))
        async with running_agent(state, config, setup=setup) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            url = await request_session(server, state.device_id, token)
            code, out, err = await run_viewer(url, "--ca", str(server.config.pki_path / "ca.pem"), "--json",
                                              "--say", "hello from a script", "--send", str(payload),
                                              "--fetch", str(payload), "--fetch-dir", str(tmp_path / "got"),
                                              token=token, timeout=60)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1, (out, err)
    steps = {line["step"]: line for line in lines}
    assert steps["caps"]["allowed"] == "chat,files,clipboard"
    assert steps["say"]["chars"] == len("hello from a script")
    assert steps["send"]["sha256"] == hashlib.sha256(payload.read_bytes()).hexdigest()
    assert (downloads / steps["send"]["saved_as"]).read_bytes() == payload.read_bytes()
    assert steps["fetch"]["error"] == "not_granted" and not (tmp_path / "got" / "notes.txt").exists()
