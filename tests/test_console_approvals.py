"""Approvals in the console (Chromium, virtual authenticator): a pending document shown field by field from the
exact signed text, approved with a certified passkey; a device (verify_chain) accepts it together with a CLI
approver's signature, and refuses the passkey approval replayed onto another document."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import msgspec
from playwright.async_api import expect

from protocol.authority import (
    SignedDocument,
    UnattendedGrant,
    new_document,
)
from server.auth.rights import Right
from tests.harness import running_server
from tests.test_accounts_support import client, login, make_user
from tests.test_console_passkeys import register_in_browser
from tests.test_console_support import console_browser
from tests.test_passkeys_support import Workstation, cli, publish, virtual_authenticator


def group_grant(grant_id: str, now: float) -> UnattendedGrant:
    return UnattendedGrant(grant_id=grant_id, groups=["lab"], technician_names=["Dave"], actions=["view"],
                           not_before=now - 60, not_after=now + 3 * 86400, issuer="Carol", issued_at=now,
                           reason="printer fleet, night work <b>x</b> \u202eevil")


async def test_approve_a_document_with_a_passkey_and_the_device_accepts_it(tmp_path: Path) -> None:
    """A group grant approved in the browser with Carol's certified passkey and by Alice's CLI key passes the
    device's verify_chain; the same passkey approval replayed onto another document is refused."""
    async with running_server(tmp_path / "srv") as server:
        admin = await make_user(server, "root", "admin", groups={"*": None})
        carol = await make_user(server, "carol", "technician",
                                groups={"lab": Right.VIEW_INVENTORY | Right.APPROVE_GRANTS | Right.MANAGE_GRANTS})
        desk = Workstation(tmp_path)
        await desk.init()
        alice_key = await desk.keygen_and_certify("Alice", "approver", "alice-0001")
        revoker_key = await desk.keygen_and_certify("Security desk", "revoker", "desk-0001")
        await desk.revoke(revoker_key, "desk-0001")

        now = time.time()
        first, second = (new_document("grant", group_grant(name, now)) for name in ("night-1", "night-2"))
        async with client(server) as http:
            auth = await login(http, carol)
            for document in (first, second):
                async with http.post("/api/v1/documents", data=msgspec.json.encode(document),
                                     headers={"X-CSRF-Token": auth.csrf, "Content-Type": "application/json"}) as resp:
                    assert resp.status == 201, await resp.text()
        async with console_browser(server) as console:
            page = console.page
            cdp = await console.context.new_cdp_session(page)
            await virtual_authenticator(cdp)
            await console.login(carol, code=carol.code(1))
            fingerprint = await register_in_browser(console, "laptop")
            row = page.locator("#my-passkeys tr[data-label='laptop']")
            passkey_id = (await row.get_attribute("data-passkey")) or ""
            async with page.expect_download() as info:
                await row.locator("button.passkey-key").click()
            await (await info.value).save_as(tmp_path / "carol.json")
            await desk.certify("--kind", "approver", "--name", "Carol", "--cose-key", str(tmp_path / "carol.json"),
                               "--id", passkey_id, "--fingerprint", fingerprint)
            await publish(server, admin, desk.upload())

            await page.click("nav a:text('Approvals')")
            await page.click("tr[data-document='night-1'] a")
            await expect(page.locator("#document-sha256")).to_have_text(hashlib.sha256(first.body.encode()).hexdigest())
            fields = page.locator("#document-fields")
            await expect(fields).to_contain_text("printer fleet, night work <b>x</b> \\u202eevil")  # text, escaped
            assert await fields.locator("b").count() == 0
            await expect(fields).to_contain_text("Dave")
            await expect(page.locator("#weaker-path")).to_contain_text("helpline approve sign")
            await page.click("#approve-passkey")
            approvals = page.locator("table.approvals tr[data-credential]")
            await expect(approvals).to_have_count(1, timeout=15_000)
            await expect(approvals).to_contain_text("valid")  # the server's own check of the passkey approval
            await console.shot("approve-with-passkey")
            assert console.csp_violations() == [], console.errors

        async with client(server) as http:
            assert (await login(http, admin, code=admin.code(1))).status == 200
            async with http.get("/api/v1/documents/night-1") as resp:
                stored = msgspec.convert((await resp.json())["document"], type=SignedDocument)
        [passkey_approval] = stored.approvals
        assert passkey_approval.credential_id == passkey_id

        # The second approver signs on the command line (the strong path); then the device decides.
        replay = SignedDocument(kind="grant", body=second.body, approvals=[passkey_approval])
        for name, document in (("night-1", stored), ("night-2", replay)):
            path = tmp_path / f"{name}.json"
            path.write_bytes(msgspec.json.encode(document))
            await cli("approve", "sign", str(path), "--key", str(alice_key), "--cert", str(desk.cert("alice-0001")),
                      "--yes", *desk.secret)
        accepted = desk.device_check(msgspec.json.decode((tmp_path / "night-1.json").read_bytes(), type=SignedDocument))
        assert accepted.allowed, accepted.reason
        assert set(accepted.holders) == {"Carol", "Alice"}
        replayed = desk.device_check(msgspec.json.decode((tmp_path / "night-2.json").read_bytes(), type=SignedDocument))
        assert not replayed.allowed and "challenge is not this grant" in replayed.reason
