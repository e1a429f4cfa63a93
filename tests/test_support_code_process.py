"""Support codes with nothing in-process: a ``helpline server`` process, a ``helpline support`` process on Xvfb.

Accounts and API tokens come from the admin CLI; the technician uses the REST API with a Bearer token
and watches through the reference viewer; the consent prompt is clicked with xdotool. The audit is
read back through the API: the redeem, a guessed code, the session.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from agent.consent.tk_app import ALLOW_BG
from agent.viewer import Viewer
from certs import tls
from tests.harness import make_pki, wait_until
from tests.procs import free_port, helpline, spawn, wait_for_port
from tests.test_session_helpers import click_colour
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


class Api:
    def __init__(self, base: str, ca: Path, tokens: dict[str, str]) -> None:
        self.base, self.ctx, self.tokens = base, tls.agent_client_context(ca, None, None), tokens

    async def call(self, method: str, path: str, user: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        async with aiohttp.ClientSession() as http, http.request(method, self.base + path, json=body, ssl=self.ctx,
                                                                 headers=headers) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def redeems(self) -> list[dict[str, Any]]:
        _s, body = await self.call("GET", "/api/v1/audit?action=support_code.redeem", "root")
        return [item["details"] for item in body["items"]]


async def test_support_session_between_real_processes(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Server and client are separate processes: redeem, Allow, a frame reaches the viewer, audit via the API."""
    subprocess.run(["xsetroot", "-display", xvfb.display, "-solid", "#993366"], check=True, timeout=10)
    data = tmp_path / "data"
    make_pki(data / "pki")
    console_port = free_port()
    config = tmp_path / "helpline.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\nhost = "127.0.0.1"\nkeepalive_s = 5.0\n\n'
                      "[support_codes]\nmax_live = 10\ndefault_ttl_min = 5\n")
    env = {"HELPLINE_AGENT_PORT": str(free_port()), "HELPLINE_CONSOLE_PORT": str(console_port)}
    with spawn("server", "--config", str(config), log=tmp_path / "server.log", env=env) as server:
        await asyncio.to_thread(wait_for_port, console_port, server, 60)
        admin_args = ["--config", str(config)]
        helpline("admin", "group", "create", "lab", *admin_args, env=env)
        tokens = {}
        for user, role, extra in (("root", "admin", []), ("tess", "technician", ["--group", "lab"])):
            helpline("admin", "user", "create", user, "--role", role, "--generate-password", *extra, *admin_args,
                     env=env)
            tokens[user] = helpline("admin", "user", "token", user, *admin_args, env=env).stdout.strip().splitlines()[-1]
        base = f"https://localhost:{console_port}"
        api = Api(base, data / "pki" / "ca.pem", tokens)
        status, code = await api.call("POST", "/api/v1/support-codes", "tess", {"group": "lab", "reason": "laptop"})
        assert status == 201 and code["ttl_min"] == 5, code
        status, text = await api.call("GET", "/api/v1/support-codes/bundle", "tess")
        assert status == 200 and f'server = "{base}"' in text
        bundle = tmp_path / "helpline-support.toml"
        bundle.write_text(text)
        guessed = str(secrets.randbelow(10 ** 12)).zfill(12)
        refused = await asyncio.to_thread(helpline, "support", "--bundle", str(bundle), guessed, "--display",
                                          xvfb.display, check=False, timeout=90)
        assert refused.returncode == 3 and "no such support code" in refused.stderr, refused.stderr
        with spawn("support", "--bundle", str(bundle), code["code"], "--display", xvfb.display,
                   log=tmp_path / "client.log") as client:
            async def waiting() -> list[dict[str, Any]]:
                _s, body = await api.call("GET", "/api/v1/support-codes", "tess")
                return [c for c in body["clients"] if c["waiting"]]

            async def someone_waits() -> bool:
                return bool(await waiting())

            await wait_until(someone_waits, timeout=60, what="the support client waiting")
            (entry,) = await waiting()
            status, session = await api.call("POST", f"/api/v1/support-clients/{entry['id']}/sessions", "tess",
                                             {"mode": "view", "reason": "laptop"})
            assert status == 201, session
            sid = session["session_id"]
            viewer = Viewer(f"wss://localhost:{console_port}/api/v1/sessions/{sid}/stream", ssl_context=api.ctx,
                            headers={"Origin": base, "Authorization": f"Bearer {tokens['tess']}"})
            async with viewer:
                await click_colour(xvfb.display, ALLOW_BG, timeout=30)
                await viewer.wait_for_updates(1, 30)
                pixel = viewer.region(2, xvfb.height - 3, 1, 1)[0, 0]  # BGRA
                assert all(abs(int(a) - b) <= 12 for a, b in zip(pixel[:3], (0x66, 0x33, 0x99), strict=True)), pixel
            await wait_until(lambda: client.poll() is not None, timeout=30, what="the support client to exit")
            assert client.returncode == 0, (tmp_path / "client.log").read_text()
        _s, row = await api.call("GET", f"/api/v1/sessions/{sid}", "tess")
        assert row["device_id"] == entry["id"] and row["state"] == "ended" and row["answered_by"] == "user"
        assert [r["outcome"] for r in await api.redeems()] == ["ok", "unknown"]
        _s, devices = await api.call("GET", "/api/v1/devices", "root")
        assert entry["id"] not in str(devices)
