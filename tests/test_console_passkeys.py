"""Passkeys in the console (Chromium with its virtual authenticator): register one and read its fingerprint,
certify it with the real `helpline trust certify`, log in with it instead of the TOTP code, refuse a cloned
authenticator whose counter went backwards."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.cose import ES256
from playwright.async_api import CDPSession, expect

from certs.authority import verify_cert
from protocol.authority import PasskeyKey, RootInfo, SignedCert
from server import audit
from server.app import HelplineServer
from tests.harness import running_server
from tests.test_accounts_support import Account, client, make_user
from tests.test_console_support import Console, console_browser
from tests.test_passkeys_support import PASSPHRASE, cli, credentials, virtual_authenticator


def cose_fingerprint(credential: dict[str, Any]) -> str:
    """The fingerprint of a virtual authenticator's credential, from its private key (independent of the server)."""
    key = serialization.load_der_private_key(base64.b64decode(credential["privateKey"]), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cose = cbor.encode(ES256.from_cryptography_key(key.public_key()))  # type: ignore[no-untyped-call]
    return hashlib.sha256(cose).hexdigest()


async def audit_details(server: HelplineServer, action: str) -> list[dict[str, Any]]:
    return [json.loads(r["details"]) if isinstance(r["details"], str) else r["details"]
            for r in await audit.recent(server.db, action=action)]


async def register_in_browser(console: Console, label: str) -> str:
    """Register a passkey on My account; the fingerprint the page shows (hex, spaces removed)."""
    page = console.page
    await page.goto(f"{console.base}/#/account")
    await page.fill("#passkey-label", label)
    await page.click("#passkey-register")
    shown = page.locator("#new-passkey-fingerprint")
    await expect(shown).to_have_text(re.compile(r"^([0-9a-f]{4} ){15}[0-9a-f]{4}$"), timeout=15_000)
    await expect(page.locator(f"#my-passkeys tr[data-label='{label}']")).to_contain_text("active")
    assert await page.locator("#passkey-mismatch").count() == 0
    return ((await shown.text_content()) or "").replace(" ", "")


async def log_out(console: Console) -> None:
    await console.page.click("#whoami button:text('Log out')")
    await console.page.wait_for_selector("#login-submit")


async def log_in_with_passkey(console: Console, account: Account) -> None:
    """Username and password, no code: the page offers the passkey step; the authenticator answers."""
    page = console.page
    await page.goto(console.base + "/#/login")
    await page.fill("#username", account.username)
    await page.fill("#password", account.password)
    await page.click("#login-submit")
    await page.click("#login-passkey", timeout=10_000)


async def test_register_certify_and_log_in_with_a_passkey(tmp_path: Path) -> None:
    """The fingerprint shown is the authenticator's key; `trust certify` issues only with it; the passkey then
    replaces the TOTP code at login (audited as factor passkey)."""
    async with running_server(tmp_path / "srv") as server:
        carol = await make_user(server, "carol", "technician", groups={"lab": None})
        async with console_browser(server) as console:
            page = console.page
            cdp = await console.context.new_cdp_session(page)
            authenticator = await virtual_authenticator(cdp)
            await console.login(carol)
            fingerprint = await register_in_browser(console, "work laptop")
            [credential] = await credentials(cdp, authenticator)
            assert cose_fingerprint(credential) == fingerprint  # what the authenticator holds, not the server's word
            await page.locator("#passkeys-card").scroll_into_view_if_needed()
            await console.shot("passkeys")
            row = page.locator("#my-passkeys tr[data-label='work laptop']")
            passkey_id = (await row.get_attribute("data-passkey")) or ""
            async with page.expect_download() as info:
                await row.locator("button.passkey-key").click()
            key_file = tmp_path / "carol.passkey.json"
            await (await info.value).save_as(key_file)

            # The administrator's workstation: the real CLI, with the fingerprint Carol reads out.
            (tmp_path / "pass.txt").write_text(PASSPHRASE + "\n")
            secret = ["--passphrase-file", str(tmp_path / "pass.txt")]
            await cli("trust", "init", "--out", str(tmp_path / "org"), *secret)
            certify = ["trust", "certify", "--dir", str(tmp_path / "org"), "--kind", "approver", "--name", "Carol",
                       "--cose-key", str(key_file), "--days", "30", "--id", passkey_id, *secret]
            refused = await cli(*certify, "--fingerprint", "0" * 64, check=False)
            assert refused.returncode == 1 and "does not match" in refused.stderr
            await cli(*certify, "--fingerprint", " ".join(fingerprint[i:i + 4] for i in range(0, 64, 4)))
            root = msgspec.json.decode((tmp_path / "org" / "root.json").read_bytes(), type=RootInfo)
            cert = verify_cert(msgspec.json.decode((tmp_path / "org" / "certs" / f"{passkey_id}.json").read_bytes(),
                                                   type=SignedCert), root=root)
            assert not isinstance(cert, str) and isinstance(cert.public_key, PasskeyKey)
            assert hashlib.sha256(cert.public_key.key_bytes()).hexdigest() == fingerprint

            await log_out(console)
            await log_in_with_passkey(console, carol)
            await page.wait_for_selector("#topbar:not([hidden])", timeout=15_000)
            await expect(page.locator("#my-account")).to_have_text("carol")
            assert console.csp_violations() == [], console.errors
        logins = await audit_details(server, "auth.login")
        assert logins[0]["factor"] == "passkey" and logins[1]["factor"] == "totp"


async def test_a_cloned_authenticator_whose_counter_went_back_is_refused_at_login(tmp_path: Path) -> None:
    """The same key in a fresh authenticator (counter back at 0) after a login with counter N: refused, audited."""
    async with running_server(tmp_path / "srv") as server:
        carol = await make_user(server, "carol", "technician", groups={"lab": None})
        async with console_browser(server) as console:
            page = console.page
            cdp = await console.context.new_cdp_session(page)
            authenticator = await virtual_authenticator(cdp)
            await console.login(carol)
            await register_in_browser(console, "laptop")
            await log_out(console)
            await log_in_with_passkey(console, carol)
            await page.wait_for_selector("#topbar:not([hidden])", timeout=15_000)
            [original] = await credentials(cdp, authenticator)
            assert original["signCount"] >= 2
            await log_out(console)
            await clone_into_new_authenticator(cdp, authenticator, original)
            await log_in_with_passkey(console, carol)
            await expect(page.locator("#login-error")).to_contain_text("wrong username, password or code",
                                                                       timeout=10_000)
            assert await page.locator("#topbar[hidden]").count() == 1
            async with client(server) as http:
                async with http.get("/api/v1/auth/me") as resp:
                    assert resp.status == 401
        [regressed] = await audit_details(server, "passkey.counter_regressed")
        assert regressed["counter"] <= regressed["stored"] and regressed["purpose"] == "login"


async def clone_into_new_authenticator(cdp: CDPSession, authenticator: str, credential: dict[str, Any]) -> str:
    """Remove ``authenticator`` and give its key to a new one whose counter starts again at 0."""
    await cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": authenticator})
    clone = await virtual_authenticator(cdp)
    copy = {k: credential[k] for k in ("credentialId", "isResidentCredential", "rpId", "privateKey", "userHandle")}
    await cdp.send("WebAuthn.addCredential", {"authenticatorId": clone, "credential": {**copy, "signCount": 0}})
    return clone


async def test_the_browser_computes_the_same_challenge_and_hash_as_the_device(tmp_path: Path) -> None:
    """passkeys.js webauthnChallenge / bodySha256 over non-ASCII, escapes and separators equal protocol.authority's."""
    from protocol.authority import body_sha256, webauthn_challenge

    bodies = ['{"reason":"café ☕ \\u2028 \\\\ \\"q\\"","x":1.5}', "", "plain"]
    async with running_server(tmp_path / "srv") as server:
        async with console_browser(server) as console:
            await console.page.goto(console.base + "/#/login")
            for kind in ("grant", "technician_proof"):
                computed = await console.page.evaluate("""async ([kind, bodies]) => {
                    const m = await import("/static/js/passkeys.js");
                    const out = [];
                    for (const body of bodies) out.push([m.hex(await m.webauthnChallenge(kind, body)), await m.bodySha256(body)]);
                    return out;
                }""", [kind, bodies])
                assert computed == [[webauthn_challenge(kind, b.encode()).hex(), body_sha256(b)] for b in bodies]
