"""Support codes end to end: a real server, a real ``helpline support`` process on Xvfb, real TLS.

The client has no enrollment and no certificate; it pins the org CA from the bundle the console
serves, redeems the code, and runs an attended session: the consent prompt is answered with
xdotool like the other consent tests, and the technician's viewer sees the Xvfb screen.
Refusals (expired, reused, guessed, revoked codes; rate limits; a wrong CA pin) are checked
against the process's exit status and the audit log.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agent.consent.tk_app import ALLOW_BG
from agent.support_client.bundle import parse_bundle
from certs import tls
from certs.pinning import fingerprint_of_pem
from protocol import codec
from protocol.messages import Error
from protocol.support import SupportRedeem
from server import audit
from server.accounts import admin
from server.app import HelplineServer
from server.support_codes.settings import SupportCodeSettings
from tests.harness import console_url, make_pki, running_server, wait_until
from tests.procs import helpline, spawn
from tests.test_session_helpers import api, click_colour, install_test_auth, viewer_for
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

ROOT = "#336699"


async def new_code(server: HelplineServer, user: str = "ann", group: str = "lab", **extra: Any) -> dict[str, Any]:
    status, body = await api(server, "POST", "/api/v1/support-codes", user, {"group": group, **extra})
    assert status == 201, body
    return dict(body)


async def bundle_file(server: HelplineServer, path: Path) -> Path:
    import aiohttp

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


async def run_client(bundle: Path, code: str, display: str, log: Path) -> tuple[int, str]:
    """One ``helpline support`` process to completion: its exit status and output."""
    result = await asyncio.to_thread(helpline, "support", "--bundle", str(bundle), code, "--display", display,
                                     check=False, timeout=90)
    log.write_text(result.stdout + result.stderr)
    return result.returncode, result.stdout + result.stderr


async def guess(server: HelplineServer, code: str) -> str:
    """One raw redeem attempt: the server's error code, or ``http_NNN`` when the upgrade was refused."""
    ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
    url = f"wss://localhost:{server.console_port}/api/v1/support/connect"
    try:
        async with connect(url, ssl=ctx, origin=console_url(server), proxy=None) as ws:  # type: ignore[arg-type]
            await ws.send(codec.encode(SupportRedeem(code=code)))
            answer = codec.decode(await ws.recv())
    except InvalidStatus as exc:
        return f"http_{exc.response.status_code}"
    assert isinstance(answer, Error), answer
    return answer.code


def random_code() -> str:
    return str(secrets.randbelow(10 ** 12)).zfill(12)


async def test_expired_guessed_and_revoked_codes_are_refused_and_audited(tmp_path: Path,
                                                                         xvfb: XvfbHandle) -> None:  # noqa: F811
    """The client exits 3 naming why; each attempt is one audit record with the outcome and the address."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        await admin.create_group(server.db, "lab", actor="test")
        bundle = await bundle_file(server, tmp_path / "helpline-support.toml")
        expired = await new_code(server)
        await server.db.execute("UPDATE support_codes SET expires_at = ? WHERE id = ?", (time.time() - 1, expired["id"]))
        revoked = await new_code(server)
        status, body = await api(server, "POST", f"/api/v1/support-codes/{revoked['id']}/revoke", "ann")
        assert status == 200 and body["state"] == "revoked"
        status, body = await api(server, "POST", f"/api/v1/support-codes/{revoked['id']}/revoke", "ann")
        assert status == 409
        cases = [(expired["code"], "expired"), (random_code(), "no such support code"), (revoked["code"], "withdrawn")]
        for n, (code, why) in enumerate(cases):
            status, out = await run_client(bundle, code, xvfb.display, tmp_path / f"client{n}.log")
            assert status == 3 and why in out, out
        records = list(reversed(await redeems(server)))
        assert [r["outcome"] for r in records] == ["expired", "unknown", "revoked"]
        assert all(r["peer"] == "127.0.0.1" for r in records)
        assert records[0]["code_id"] == expired["id"] and "code_id" not in records[1]
        _s, listed = await api(server, "GET", "/api/v1/support-codes", "ann")
        states = {c["id"]: c["state"] for c in listed["codes"]}
        assert states == {expired["id"]: "expired", revoked["id"]: "revoked"} and listed["clients"] == []


async def test_rate_limits_trip_per_address_and_globally(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Past the per-address limit the upgrade gets 429 (the client says so, exit 3); the global limit likewise."""
    per_address = SupportCodeSettings(per_address_per_window=3)
    async with running_server(tmp_path / "a", support_codes=per_address) as server:
        await admin.create_group(server.db, "lab", actor="test")
        install_test_auth(server)
        live = await new_code(server)
        assert [await guess(server, random_code()) for _ in range(3)] == ["code_unknown"] * 3
        assert await guess(server, random_code()) == "http_429"
        bundle = await bundle_file(server, tmp_path / "a.toml")
        status, out = await run_client(bundle, live["code"], xvfb.display, tmp_path / "client.log")
        assert status == 3 and "too many support-code attempts" in out, out  # even the right code waits now
        outcomes = [r["outcome"] for r in await redeems(server)]
        assert outcomes.count("unknown") == 3 and outcomes.count("rate_limited") == 2
        _s, listed = await api(server, "GET", "/api/v1/support-codes", "ann")
        assert listed["codes"][0]["state"] == "live"
    everywhere = SupportCodeSettings(per_address_per_window=50, global_per_window=2)
    async with running_server(tmp_path / "b", support_codes=everywhere) as server:
        assert [await guess(server, random_code()) for _ in range(3)] == ["code_unknown", "code_unknown", "http_429"]


async def test_a_wrong_ca_pin_refuses_to_connect(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """A bundle pinning another CA: the client stops before redeeming (exit 4); the code stays live."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        await admin.create_group(server.db, "lab", actor="test")
        live = await new_code(server)
        bundle = await bundle_file(server, tmp_path / "helpline-support.toml")
        other = make_pki(tmp_path / "other-pki") / "ca.pem"
        text = bundle.read_text()
        right = parse_bundle(text).ca_sha256
        bundle.write_text(text.replace(right, fingerprint_of_pem(other.read_bytes())))
        status, out = await run_client(bundle, live["code"], xvfb.display, tmp_path / "client.log")
        assert status == 4 and "cannot verify the server" in out, out
        assert await redeems(server) == []
        _s, listed = await api(server, "GET", "/api/v1/support-codes", "ann")
        assert listed["codes"][0]["state"] == "live"


async def test_live_codes_are_capped_and_bound_to_their_technician(tmp_path: Path) -> None:
    """Past max_live a new code is 409; another technician may neither revoke nor use a code; admins may."""
    async with running_server(tmp_path / "srv", support_codes=SupportCodeSettings(max_live=2)) as server:
        install_test_auth(server)
        await admin.create_group(server.db, "lab", actor="test")
        first, _second = await new_code(server), await new_code(server, user="vic")
        status, body = await api(server, "POST", "/api/v1/support-codes", "ann", {"group": "lab"})
        assert status == 409 and body["error"]["code"] == "too_many_live_codes"
        status, body = await api(server, "POST", f"/api/v1/support-codes/{first['id']}/revoke", "vic")
        assert status == 403, body
        status, body = await api(server, "POST", "/api/v1/support-codes", "bob", {"group": "lab"})
        assert status == 403, body  # bob has rights on another group only
        status, body = await api(server, "POST", f"/api/v1/support-codes/{first['id']}/revoke", "root")
        assert status == 200 and body["revoked_by"] == "root"
        await new_code(server)  # room again
        assert {"support_code.created", "support_code.revoked"} <= {
            r["action"] for r in await audit.recent(server.db, limit=50)}
        assert first["code"].replace(" ", "") not in json.dumps(await audit.recent(server.db, limit=50), default=str)
