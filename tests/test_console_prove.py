"""'Prove with passkey' on the device page (Chromium, virtual authenticator, a real agent pinned to the org root):
an unattended session under a two-approver grant waits for the device's challenge; the technician's certified
passkey answers it in the browser and the device verifies the proof itself."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
from playwright.async_api import expect

from agent.config import AgentConfig
from protocol.authority import UnattendedGrant, new_document
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_accounts_support import client, login, make_user
from tests.test_console_passkeys import register_in_browser
from tests.test_console_support import console_browser
from tests.test_passkeys_support import Workstation, cli, publish, virtual_authenticator
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


async def test_prove_an_unattended_session_with_a_passkey_from_the_device_page(tmp_path: Path,
                                                                              xvfb: XvfbHandle) -> None:  # noqa: F811
    """Dave's passkey, certified as his technician credential, signs the device's nonce from the device page; the
    device accepts (its own audit names Dave) and the session starts by grant."""
    async with running_server(tmp_path / "srv") as server:
        admin = await make_user(server, "root", "admin", groups={"*": None})
        dave = await make_user(server, "dave", "technician", groups={"lab": None})
        desk = Workstation(tmp_path)
        await desk.init()
        keys = {name: await desk.keygen_and_certify(name, kind, f"{name.lower()}-0001")
                for name, kind in (("Alice", "approver"), ("Bob", "approver"), ("Desk", "revoker"))}
        await desk.revoke(keys["Desk"], "desk-0001")
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0,
                             trust_root_sha256=desk.root().fingerprint, unattended_proof_timeout_s=60,
                             display=xvfb.display)

        async with console_browser(server) as console, running_agent(state, config):
            page = console.page
            await virtual_authenticator(await console.context.new_cdp_session(page))
            await console.login(dave)
            fingerprint = await register_in_browser(console, "laptop")
            row = page.locator("#my-passkeys tr[data-passkey]")
            passkey_id = (await row.get_attribute("data-passkey")) or ""
            async with page.expect_download() as info:
                await row.locator("button.passkey-key").click()
            await (await info.value).save_as(tmp_path / "dave.json")
            await desk.certify("--kind", "technician", "--name", "Dave", "--cose-key", str(tmp_path / "dave.json"),
                               "--id", passkey_id, "--fingerprint", fingerprint)
            await publish(server, admin, desk.upload())

            now = time.time()
            grant = UnattendedGrant(grant_id="night-lab", groups=["lab"], technician_names=["Dave"], actions=["view"],
                                    not_before=now - 60, not_after=now + 3600, issuer="Alice", issued_at=now)
            draft = tmp_path / "night-lab.json"
            draft.write_bytes(msgspec.json.encode(new_document("grant", grant)))
            for name in ("Alice", "Bob"):
                await cli("approve", "sign", str(draft), "--key", str(keys[name]), "--cert",
                          str(desk.cert(f"{name.lower()}-0001")), "--yes", *desk.secret)
            async with client(server) as http:
                auth = await login(http, admin, code=admin.code(1))
                headers = {"X-CSRF-Token": auth.csrf, "Content-Type": "application/json"}
                async with http.post("/api/v1/documents", data=draft.read_bytes(), headers=headers) as resp:
                    assert resp.status == 201, await resp.text()

                async def device_holds_it() -> bool:
                    async with http.get(f"/api/v1/devices/{state.device_id}/authority") as resp:
                        report: dict[str, Any] = await resp.json()
                    return "night-lab" in report.get("accepted", [])

                await wait_until(device_holds_it, timeout=20, what="the device accepts the grant")

            async with client(server) as dave_api:  # Dave's script asks for the session
                auth = await login(dave_api, dave, code=dave.code(1))
                async with dave_api.post(f"/api/v1/devices/{state.device_id}/sessions",
                                         json={"mode": "view", "reason": "night work", "document_id": "night-lab"},
                                         headers={"X-CSRF-Token": auth.csrf}) as resp:
                    assert resp.status == 201, await resp.text()
                    session_id = (await resp.json())["session_id"]

                await page.goto(f"{console.base}/#/devices/{state.device_id}/remote")
                panel = page.locator(f"[data-prove-session='{session_id}']")
                prove = panel.locator("button.prove-passkey")
                deadline = time.monotonic() + 20
                while not await prove.count():  # the device's challenge arrives a moment after the offer
                    assert time.monotonic() < deadline, "no challenge from the device"
                    await page.click("#tab-remote")
                    await expect(panel).to_be_visible(timeout=10_000)
                await expect(panel).to_contain_text("night-lab")
                await console.shot("prove-with-passkey")
                await prove.click()
                await expect(page.locator("#toast")).to_contain_text("the device accepted it", timeout=20_000)
                assert console.csp_violations() == [], console.errors

                async with dave_api.get(f"/api/v1/sessions/{session_id}") as resp:
                    session = await resp.json()
                assert session["answered_by"] == "grant" and session["state"] in ("consented", "streaming"), session
        audit = [json.loads(line) for line in (state.directory / "device-audit.jsonl").read_text().splitlines()]
        [accepted] = [e for e in audit if e.get("event") == "session.unattended" and e.get("session_id") == session_id]
        assert accepted["accepted"] is True and accepted["technician"] == "Dave", accepted
