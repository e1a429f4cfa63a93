"""Passkeys over the real HTTPS API, answered by a software passkey: registration checked by python-fido2,
the public key handed out for certification, the login's second factor with its counter, signing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from certs.authority import verify_cert
from protocol.authority import (
    PasskeyKey,
    RootInfo,
    SignedCert,
    SignedDocument,
    TechnicianStatement,
    UnattendedGrant,
    decode_canonical,
    key_fingerprint,
    new_document,
    webauthn_challenge,
)
from server import audit
from server.app import HelplineServer
from tests.harness import console_url, running_server
from tests.procs import helpline
from tests.test_accounts_support import Account, client, login, make_user
from tests.test_passkeys_support import UP, Org, SoftPasskey


@pytest.fixture
async def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_server(tmp_path / "srv") as srv:
        yield srv


async def logged_in(server: HelplineServer, account: Account, *, step: int = 0) -> aiohttp.ClientSession:
    """A client logged in as ``account`` with the TOTP code of ``step`` (each step's code is accepted once)."""
    http = client(server)
    result = await login(http, account, code=account.code(step))
    if result.status != 200:
        await http.close()
        raise AssertionError(result.body)
    http.headers["X-CSRF-Token"] = result.csrf
    return http


async def register(http: aiohttp.ClientSession, soft: SoftPasskey, label: str = "laptop", **create: Any
                   ) -> tuple[int, dict[str, Any]]:
    async with http.post("/api/v1/passkeys/register/begin") as resp:
        assert resp.status == 200, await resp.text()
        begun = await resp.json()
    answer = soft.create(begun["options"], **create)
    async with http.post("/api/v1/passkeys/register/finish", json={"registration_id": begun["registration_id"],
                                                                   "label": label, "credential": answer}) as resp:
        return resp.status, await resp.json()


async def audit_actions(server: HelplineServer, action: str) -> list[dict[str, Any]]:
    """The audit records of ``action``, newest first, details decoded."""
    rows = await audit.recent(server.db, action=action)
    return [{**r, "details": json.loads(r["details"]) if isinstance(r["details"], str) else r["details"]}
            for r in rows]


async def test_registration_keeps_the_public_key_and_hands_it_out_for_certification(server: HelplineServer) -> None:
    """begin offers ES256 first for rp 'localhost'; finish keeps the key; list and public-key agree on the fingerprint."""
    tess = await make_user(server, "tess", "technician")
    soft = SoftPasskey(console_url(server))
    async with await logged_in(server, tess) as http:
        async with http.post("/api/v1/passkeys/register/begin") as resp:
            options = (await resp.json())["options"]
        assert options["rp"]["id"] == "localhost"
        assert [p["alg"] for p in options["pubKeyCredParams"]] == [-7, -8]
        assert options["authenticatorSelection"]["userVerification"] == "preferred"
        status, made = await register(http, soft, "  work   laptop ")
        assert status == 201, made
        assert made["fingerprint"] == soft.fingerprint and made["label"] == "work laptop"
        async with http.get("/api/v1/passkeys") as resp:
            items = (await resp.json())["items"]
        assert [i["id"] for i in items] == [made["id"]] and items[0]["fingerprint"] == soft.fingerprint
        async with http.get(f"/api/v1/passkeys/{made['id']}/public-key") as resp:
            key = msgspec.json.decode(await resp.read(), type=PasskeyKey)
        assert key.key_bytes() == soft.cose_bytes and key_fingerprint(key) == soft.fingerprint
        assert (key.rp_id, key.origins, key.webauthn_id) == ("localhost", [console_url(server)], made["webauthn_id"])
        async with http.post("/api/v1/passkeys/register/begin") as resp:
            again = (await resp.json())["options"]
        assert [c["id"] for c in again["excludeCredentials"]] == [made["webauthn_id"]]
        status, body = await register(http, soft)
        assert status == 409 and body["error"]["code"] == "passkey_exists"
    [record] = await audit_actions(server, "passkey.registered")
    assert record["target"] == made["id"] and record["details"]["fingerprint"] == soft.fingerprint


@pytest.mark.parametrize(("create", "code"), [
    ({"origin": "https://evil.example:8444"}, "invalid_passkey"),
    ({"rp_id": "evil.example"}, "invalid_passkey"),
    ({"flags": UP.__class__(0)}, "invalid_passkey"),
])
async def test_registration_refuses_a_wrong_origin_rp_or_missing_presence(server: HelplineServer,
                                                                        create: dict[str, Any], code: str) -> None:
    """python-fido2 refuses an answer from another origin, for another rp id, or without user presence."""
    tess = await make_user(server, "tess", "technician")
    async with await logged_in(server, tess) as http:
        status, body = await register(http, SoftPasskey(console_url(server)), **create)
        assert (status, body["error"]["code"]) == (400, code)
        async with http.get("/api/v1/passkeys") as resp:
            assert (await resp.json())["items"] == []


async def test_a_registration_ticket_is_single_use_and_personal(server: HelplineServer) -> None:
    """A registration is finished once, and only by the user who began it."""
    tess = await make_user(server, "tess", "technician")
    mallory = await make_user(server, "mallory", "technician")
    soft = SoftPasskey(console_url(server))
    async with await logged_in(server, tess) as http, await logged_in(server, mallory) as other:
        async with http.post("/api/v1/passkeys/register/begin") as resp:
            begun = await resp.json()
        body = {"registration_id": begun["registration_id"], "label": "x", "credential": soft.create(begun["options"])}
        async with other.post("/api/v1/passkeys/register/finish", json=body) as resp:
            assert resp.status == 409 and (await resp.json())["error"]["code"] == "registration_expired"
        async with http.post("/api/v1/passkeys/register/finish", json=body) as resp:
            assert resp.status == 409  # mallory's attempt used the ticket up


async def test_another_users_passkey_is_not_found_but_an_admin_reads_and_revokes_it(server: HelplineServer) -> None:
    """Another user's passkey answers 404 like a missing one; an administrator may read and revoke it (audited)."""
    tess = await make_user(server, "tess", "technician")
    mallory = await make_user(server, "mallory", "technician")
    root = await make_user(server, "root", "admin", groups={"*": None})
    async with await logged_in(server, tess) as http:
        _, made = await register(http, SoftPasskey(console_url(server)))
    path = f"/api/v1/passkeys/{made['id']}"
    async with await logged_in(server, mallory) as other:
        for method, url in (("GET", path + "/public-key"), ("DELETE", path), ("GET", "/api/v1/passkeys/pk-missing1/public-key")):
            async with other.request(method, url) as resp:
                assert resp.status == 404, (method, url)
    async with await logged_in(server, root) as admin:
        async with admin.get(path + "/public-key") as resp:
            assert resp.status == 200
        async with admin.delete(path) as resp:
            assert (await resp.json()) == {"revoked": True}
        async with admin.delete(path) as resp:
            assert (await resp.json()) == {"revoked": False}
    [record] = await audit_actions(server, "passkey.revoked")
    assert record["actor"] == "root" and record["details"]["user_id"] == tess.user_id


async def password_step(server: HelplineServer, http: aiohttp.ClientSession, account: Account) -> dict[str, Any]:
    result = await login(http, account, code="")
    assert result.status == 401 and result.body["error"]["code"] == "totp_required", result.body
    return result.body


async def passkey_step(http: aiohttp.ClientSession, ticket: str, credential: dict[str, Any]
                       ) -> tuple[int, dict[str, Any]]:
    async with http.post("/api/v1/auth/login/passkey", json={"ticket": ticket, "credential": credential}) as resp:
        return resp.status, await resp.json()


async def test_a_passkey_replaces_the_totp_code_at_login(server: HelplineServer) -> None:
    """Password without a code → ticket and request options; the passkey's answer logs in (audited as passkey)."""
    tess = await make_user(server, "tess", "technician")
    soft = SoftPasskey(console_url(server))
    async with await logged_in(server, tess) as http:
        _, made = await register(http, soft)
    async with client(server) as http:
        step = (await password_step(server, http, tess))["passkey"]
        assert step["options"]["rpId"] == "localhost"
        assert [c["id"] for c in step["options"]["allowCredentials"]] == [made["webauthn_id"]]
        status, body = await passkey_step(http, step["ticket"], soft.answer(step["options"]))
        assert status == 200 and body["user"]["username"] == "tess", body
        async with http.get("/api/v1/auth/me") as resp:
            assert resp.status == 200
        replay = await passkey_step(http, step["ticket"], soft.answer(step["options"]))
        assert replay[0] == 401 and replay[1]["error"]["code"] == "passkey_expired"
    logins = await audit_actions(server, "auth.login")
    assert logins[0]["details"]["factor"] == "passkey"
    async with client(server) as http:
        body = await password_step(server, http, await make_user(server, "nokey", "technician"))
        assert "passkey" not in body  # no passkey, no offer: TOTP only


async def test_a_counter_that_did_not_grow_is_refused_and_audited(server: HelplineServer) -> None:
    """A login whose signature counter is not above the stored one (a cloned key) is refused and audited."""
    tess = await make_user(server, "tess", "technician")
    soft = SoftPasskey(console_url(server))
    async with await logged_in(server, tess) as http:
        await register(http, soft)
    async with client(server) as http:
        step = (await password_step(server, http, tess))["passkey"]
        assert (await passkey_step(http, step["ticket"], soft.answer(step["options"], counter=10)))[0] == 200
    for counter in (10, 3):
        async with client(server) as http:
            step = (await password_step(server, http, tess))["passkey"]
            status, body = await passkey_step(http, step["ticket"], soft.answer(step["options"], counter=counter))
            assert status == 401 and body["error"]["code"] == "invalid_credentials"
            async with http.get("/api/v1/auth/me") as resp:
                assert resp.status == 401
    regressed = await audit_actions(server, "passkey.counter_regressed")
    assert [(r["details"]["counter"], r["details"]["stored"]) for r in regressed] == [(3, 10), (10, 10)]
    failed = [r["details"]["reason"] for r in await audit_actions(server, "auth.login_failed")]
    assert failed == ["passkey_counter_regressed"] * 2


async def test_a_wrong_signature_or_revoked_passkey_fails_and_counts_towards_the_lockout(server: HelplineServer
                                                                                         ) -> None:
    """A forged assertion is a failed login (counted: five lock the account); a revoked passkey is no longer offered."""
    from cryptography.hazmat.primitives.asymmetric import ec

    tess = await make_user(server, "tess", "technician")
    soft = SoftPasskey(console_url(server))
    async with await logged_in(server, tess) as http:
        _, made = await register(http, soft)
    statuses = []
    for _ in range(5):
        async with client(server) as http:
            step = (await password_step(server, http, tess))["passkey"]
            forged = soft.answer(step["options"], signer=ec.generate_private_key(ec.SECP256R1()))
            statuses.append((await passkey_step(http, step["ticket"], forged))[0])
    assert statuses == [401] * 5
    async with client(server) as http:
        assert (await login(http, tess, code="")).status == 423
    await server.db.execute("UPDATE users SET locked_until = NULL WHERE id = ?", (tess.user_id,))
    async with await logged_in(server, tess, step=1) as http, http.delete(f"/api/v1/passkeys/{made['id']}") as resp:
        assert resp.status == 200
    async with client(server) as http:
        assert "passkey" not in await password_step(server, http, tess)


async def test_signing_gives_an_approval_a_device_accepts(server: HelplineServer) -> None:
    """A passkey assertion over a grant becomes an Approval that verify_chain accepts once the key is certified;
    an assertion over another body or without user verification is refused by the server."""
    tess = await make_user(server, "tess", "technician")
    soft = SoftPasskey(console_url(server))
    async with await logged_in(server, tess) as http:
        _, made = await register(http, soft)
        async with http.get(f"/api/v1/passkeys/{made['id']}/public-key") as resp:
            key = msgspec.json.decode(await resp.read(), type=PasskeyKey)
        world = Org.new(now=time.time())
        world.certify(made["id"], "approver", "Tess", key)
        now = time.time()
        grant = new_document("grant", UnattendedGrant(
            grant_id="g-1", devices=["dev-1"], technician_names=["Dave"], actions=["view"], not_before=now - 60,
            not_after=now + 3600, issuer="Tess", issued_at=now))
        challenge = webauthn_challenge("grant", grant.body.encode())
        payload = {"kind": "grant", "body": grant.body, "credential": soft.get(challenge)}
        async with http.post("/api/v1/passkeys/assertions", json=payload) as resp:
            assert resp.status == 200, await resp.text()
            approval = (await resp.json())["approval"]
        document = msgspec.convert({"kind": "grant", "body": grant.body, "approvals": [approval]},
                                   type=SignedDocument)
        verdict = world.check(document, now=now)
        assert verdict.allowed, verdict.reason
        other = {**payload, "body": grant.body.replace("g-1", "g-2"), "credential": soft.get(challenge)}
        async with http.post("/api/v1/passkeys/assertions", json=other) as resp:
            assert (resp.status, (await resp.json())["error"]["code"]) == (400, "wrong_challenge")
        no_uv = {**payload, "credential": soft.get(challenge, flags=UP)}
        async with http.post("/api/v1/passkeys/assertions", json=no_uv) as resp:
            assert (resp.status, (await resp.json())["error"]["code"]) == (400, "bad_passkey")
        async with http.post("/api/v1/passkeys/statements", json={
                "nonce": "n" * 24, "device_id": "dev-1", "action": "view", "document_id": "g-1"}) as resp:
            text = (await resp.json())["body"]
        statement = decode_canonical(text, TechnicianStatement)
        assert (statement.nonce, statement.device_id) == ("n" * 24, "dev-1")
        assert abs(statement.signed_at - time.time()) < 60


async def test_the_console_key_file_is_certified_only_with_the_holders_fingerprint(server: HelplineServer,
                                                                                   tmp_path: Path) -> None:
    """`helpline trust certify --cose-key` takes the public-key JSON: shows its fingerprint and relying party,
    refuses another fingerprint or a conflicting --rp-id, and certifies the very key with the right one."""
    tess = await make_user(server, "tess", "technician")
    soft = SoftPasskey(console_url(server))
    async with await logged_in(server, tess) as http:
        _, made = await register(http, soft)
        async with http.get(f"/api/v1/passkeys/{made['id']}/public-key") as resp:
            (tmp_path / "tess.passkey.json").write_bytes(await resp.read())
    (tmp_path / "pass.txt").write_text("correct horse battery staple\n")
    secret = ["--passphrase-file", str(tmp_path / "pass.txt")]
    await asyncio.to_thread(helpline, "trust", "init", "--out", str(tmp_path / "root"), *secret)
    base = ["trust", "certify", "--dir", str(tmp_path / "root"), "--kind", "technician", "--name", "Tess",
            "--cose-key", str(tmp_path / "tess.passkey.json"), "--days", "30", "--id", made["id"], *secret]

    async def certify(*extra: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(helpline, *base, *extra, check=False)

    shown = await certify()
    assert shown.returncode == 1 and soft.fingerprint in shown.stdout
    assert f"relying party localhost, origins {console_url(server)}" in shown.stdout
    assert "does not match" in (await certify("--fingerprint", "ab" * 32)).stderr
    assert "differs" in (await certify("--rp-id", "evil.example", "--fingerprint", soft.fingerprint)).stderr
    cert_file = tmp_path / "root" / "certs" / f"{made['id']}.json"
    assert not cert_file.exists()
    assert (await certify("--fingerprint", made["fingerprint"])).returncode == 0
    root = msgspec.json.decode((tmp_path / "root" / "root.json").read_bytes(), type=RootInfo)
    cert = verify_cert(msgspec.json.decode(cert_file.read_bytes(), type=SignedCert), root=root)
    assert not isinstance(cert, str) and isinstance(cert.public_key, PasskeyKey)
    assert cert.public_key.key_bytes() == soft.cose_bytes and cert.credential_id == made["id"]
    assert cert.public_key.origins == [console_url(server)] and cert.public_key.rp_id == "localhost"
