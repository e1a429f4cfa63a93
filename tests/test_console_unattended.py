"""Starting an unattended session from the device page, and taking control, with the technician's passkey
(Chromium with a virtual authenticator, a real server and a real agent pinned to the org root, on Xvfb).

Dave's certified passkey is his technician credential. On the device page he picks the grant (listed from the
server's documents store, marked as held by the device) instead of "Ask the user", and lands on the viewer,
which shows the device's challenge: "Prove with passkey" starts the session by grant. "Ask for control" makes
the device challenge again for control; the same prompt answers it. The device's own audit log names Dave as
verified for both.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
from playwright.async_api import expect

from agent.config import AgentConfig
from protocol.authority import TaskAuthorization, UnattendedGrant, new_document
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_accounts_support import client, login, make_user
from tests.test_console_passkeys import register_in_browser
from tests.test_console_support import console_browser
from tests.test_passkeys_support import Workstation, cli, publish, virtual_authenticator
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures


async def test_pick_a_grant_on_the_device_page_and_prove_with_a_passkey(tmp_path: Path,
                                                                        xvfb: XvfbHandle) -> None:  # noqa: F811
    """The grant field lists the device's grant; choosing it and answering the challenge with the passkey starts
    the session by grant; asking for control is proven the same way; the device audit names Dave twice."""
    async with running_server(tmp_path / "srv") as server:
        admin = await make_user(server, "root", "admin", groups={"*": None})
        dave = await make_user(server, "dave", "technician", groups={"lab": None})
        desk = Workstation(tmp_path)
        await desk.init()
        keys = {name: await desk.keygen_and_certify(name, kind, f"{name.lower()}-0001")
                for name, kind in (("Alice", "approver"), ("Bob", "approver"), ("Desk", "revoker"))}
        await desk.revoke(keys["Desk"], "desk-0001")
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, trust_root_sha256=desk.root().fingerprint,
                             unattended_proof_timeout_s=60, display=xvfb.display)

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
            grant = UnattendedGrant(grant_id="night-lab", groups=["lab"], technician_names=["Dave"],
                                    actions=["view", "control"], not_before=now - 60, not_after=now + 3600,
                                    issuer="Alice", issued_at=now, reason="overnight patching")
            task = TaskAuthorization(task_id="dry-clean", action="clear_temp", params={"dry_run": True, "targets": ["dnf_cache"]},
                                     devices=[state.device_id], technician_names=["Dave"], not_before=now - 60,
                                     not_after=now + 3600, issuer="Alice", issued_at=now)
            drafts = [tmp_path / "night-lab.json", tmp_path / "dry-clean.json"]
            drafts[0].write_bytes(msgspec.json.encode(new_document("grant", grant)))
            drafts[1].write_bytes(msgspec.json.encode(new_document("task", task)))
            for draft in drafts:
                for name in ("Alice", "Bob"):
                    await cli("approve", "sign", str(draft), "--key", str(keys[name]), "--cert",
                              str(desk.cert(f"{name.lower()}-0001")), "--yes", *desk.secret)
            async with client(server) as http:
                auth = await login(http, admin, code=admin.code(1))
                headers = {"X-CSRF-Token": auth.csrf, "Content-Type": "application/json"}
                for draft in drafts:
                    async with http.post("/api/v1/documents", data=draft.read_bytes(), headers=headers) as resp:
                        assert resp.status == 201, await resp.text()

                async def device_holds_it() -> bool:
                    async with http.get(f"/api/v1/devices/{state.device_id}/authority") as resp:
                        report: dict[str, Any] = await resp.json()
                    return "night-lab" in report.get("accepted", [])

                await wait_until(device_holds_it, timeout=20, what="the device accepts the grant")

            # The device page: View screen → the form offers the grant next to "Ask the user".
            await page.goto(f"{console.base}/#/devices/{state.device_id}")
            await page.click("#start-view")
            picker = page.locator("#session-grant")
            await expect(picker.locator("option[value='night-lab']")).to_have_count(1, timeout=10_000)
            await page.fill("#session-reason", "ticket 4711, overnight patching")
            await picker.select_option("night-lab")
            await expect(page.locator("#session-confirm")).to_have_text("Start unattended")
            await console.shot("unattended-grant-field")
            await page.click("#session-confirm")
            await page.wait_for_url("**/#/sessions/*")
            session_id = page.url.rsplit("/", 1)[1]

            # The viewer shows the device's challenge; the passkey answers it.
            prove = page.locator("#viewer-proof button.prove-passkey")
            await expect(prove).to_be_visible(timeout=20_000)
            await expect(page.locator("#viewer-proof")).to_contain_text("night-lab")
            await prove.click()
            await expect(page.locator("#toast")).to_contain_text("the device accepted it", timeout=20_000)
            banner = page.locator("#consent-banner")
            await expect(banner).to_have_attribute("data-mode", "view", timeout=20_000)
            await expect(banner).to_contain_text("Grant night-lab and your proof allowed VIEW ONLY")

            # Ask for control: the device challenges again for control; the same prompt answers it.
            await page.click("#request-control")
            await expect(page.locator("#viewer-proof")).to_contain_text("Switching to control", timeout=20_000)
            await console.shot("unattended-control-proof")
            await page.locator("#viewer-proof button.prove-passkey").click()
            await expect(banner).to_have_attribute("data-mode", "control", timeout=20_000)
            await expect(page.locator("#viewer-proof")).to_be_empty()
            assert console.csp_violations() == [], console.errors
            await page.click("#end-session")

            # A task authorization naming Dave (uploaded above): he starts it, the device challenges the run, his
            # passkey answers it on the device page's Tasks tab.
            created = await page.evaluate(  # Dave starts it, from his console session (as a script of his would)
                """async (device) => (await import("/static/js/api.js")).post("/api/v1/tasks",
                     { document_id: "dry-clean", device })""", state.device_id)
            assert created["task"]["technician"] == "dave", created
            await page.goto(f"{console.base}/#/devices/{state.device_id}/tasks")
            prove_run = page.locator("#device-task-runs button.prove-run")
            deadline = time.monotonic() + 20
            while not await prove_run.count():  # the device's challenge arrives a moment after the run is sent
                assert time.monotonic() < deadline, await page.locator("#device-task-runs").inner_text()
                await page.click("#refresh-tasks")
                await page.wait_for_timeout(300)
            await console.shot("task-run-proof")
            await prove_run.click()
            await expect(page.locator("#toast")).to_contain_text("Proof sent; the run is succeeded", timeout=20_000)

        audit = [json.loads(line) for line in (state.directory / "device-audit.jsonl").read_text().splitlines()]
        [started] = [e for e in audit if e.get("event") == "session.unattended" and e.get("session_id") == session_id]
        assert started["accepted"] is True and started["technician"] == "Dave" and started["mode"] == "view", started
        [upgraded] = [e for e in audit if e.get("event") == "session.upgrade" and e.get("session_id") == session_id]
        assert upgraded["accepted"] is True and upgraded["technician"] == "Dave" and upgraded["mode"] == "control"
        [ran] = [e for e in audit if e.get("event") == "task.accepted" and e.get("document_id") == "dry-clean"]
        assert ran["technician"] == "Dave", ran
