"""Support codes end to end: a real server, a real ``helpline support`` process on Xvfb, real TLS.

The client has no enrollment and no certificate; it pins the org CA from the bundle the console
serves, redeems the code, and runs an attended session: the consent prompt is answered with
xdotool like the other consent tests, and the technician's viewer sees the Xvfb screen.
Refusals (expired, reused, guessed, revoked codes; rate limits; a wrong CA pin) are checked
against the process's exit status and the audit log.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from agent.consent.tk_app import ALLOW_BG
from server import audit
from server.accounts import admin
from server.app import HelplineServer
from tests.harness import running_server, wait_until
from tests.procs import spawn
from tests.test_session_helpers import api, click_colour, install_test_auth, viewer_for
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

ROOT = "#336699"


async def new_code(server: HelplineServer, user: str = "ann", group: str = "lab", **extra: Any) -> dict[str, Any]:
    status, body = await api(server, "POST", "/api/v1/support-codes", user, {"group": group, **extra})
    assert status == 201, body
    return dict(body)


async def bundle_file(server: HelplineServer, path: Path) -> Path:
    import aiohttp

    from certs import tls
    from tests.harness import console_url

    ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
    async with aiohttp.ClientSession() as http, http.get(console_url(server) + "/api/v1/support-codes/bundle",
                                                         ssl=ctx, headers={"X-Test-User": "ann"}) as resp:
        assert resp.status == 200 and "attachment" in resp.headers["Content-Disposition"]
        path.write_text(await resp.text())
    return path


async def redeems(server: HelplineServer) -> list[dict[str, Any]]:
    rows = await audit.recent(server.db, limit=500, action="support_code.redeem")
    return [r["details"] if isinstance(r["details"], dict) else json.loads(r["details"]) for r in rows]


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    await wait_until(lambda: proc.poll() is not None, timeout=timeout, what="the support client to exit")
    return int(proc.returncode)


async def test_support_code_session_from_a_machine_that_is_not_enrolled(tmp_path: Path,
                                                                        xvfb: XvfbHandle) -> None:  # noqa: F811
    """Redeem, wait, Allow on the prompt, the viewer sees the screen; the code is spent; no CMDB device."""
    subprocess.run(["xsetroot", "-display", xvfb.display, "-solid", ROOT], check=True, timeout=10)
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        await admin.create_group(server.db, "lab", actor="test")
        code = await new_code(server, reason="contractor laptop")
        assert len(code["code"].replace(" ", "")) == 12 and code["code"].count(" ") == 3
        bundle = await bundle_file(server, tmp_path / "helpline-support.toml")
        with spawn("support", "--bundle", str(bundle), code["code"], "--display", xvfb.display,
                   log=tmp_path / "client.log", env={"DISPLAY": xvfb.display}) as proc:
            async def waiting() -> bool:
                _s, body = await api(server, "GET", "/api/v1/support-codes", "ann")
                return any(c["waiting"] for c in body["clients"])

            await wait_until(waiting, timeout=30, what="the support client waiting")
            _s, listed = await api(server, "GET", "/api/v1/support-codes", "ann")
            assert "code" not in listed["codes"][0] and listed["codes"][0]["state"] == "used"
            client = listed["clients"][0]
            assert client["kind"] == "support_client" and client["id"].startswith("spc-")
            status, session = await api(server, "POST", f"/api/v1/support-clients/{client['id']}/sessions", "ann",
                                        {"mode": "view", "reason": "contractor laptop"})
            assert status == 201, session
            sid = session["session_id"]
            async with viewer_for(server, sid) as viewer:
                await click_colour(xvfb.display, ALLOW_BG, timeout=30)
                await viewer.wait_for_updates(1, 30)
                pixel = viewer.region(2, xvfb.height - 3, 1, 1)[0, 0]  # BGRA
                assert all(abs(int(a) - b) <= 12 for a, b in zip(pixel[:3], (0x99, 0x66, 0x33), strict=True)), pixel
            status, again = await api(server, "POST", f"/api/v1/support-clients/{client['id']}/sessions", "ann", {})
            assert status == 409, again  # one session per code
            assert await wait_exit(proc) == 0
        _s, row = await api(server, "GET", f"/api/v1/sessions/{sid}", "ann")
        assert row["device_id"] == client["id"] and row["state"] == "ended" and row["bytes_to_technician"] > 0
        _s, devices = await api(server, "GET", "/api/v1/devices", "ann")
        assert client["id"] not in str(devices)
        outcomes = [d["outcome"] for d in await redeems(server)]
        assert outcomes == ["ok"]
        # The same code again: spent.
        with spawn("support", "--bundle", str(bundle), code["code"], "--display", xvfb.display,
                   log=tmp_path / "client2.log") as proc:
            assert await wait_exit(proc) == 3
        assert "already used" in (tmp_path / "client2.log").read_text()
        assert next(d["outcome"] for d in await redeems(server)) == "reused"
