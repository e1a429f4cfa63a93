"""Unattended sessions under approver-signed grants and the technician's proof, with real processes.

One org for the module, made as an administrator would: ``helpline trust init/keygen/certify/revoke``
on a "workstation" directory, ``helpline trust publish`` to a real ``helpline server``; a real
``helpline agent run`` enrolled with ``--root-sha256`` on an Xvfb display (nobody logged in, so
nothing can be consented to: only a grant and a proof can start a session). Approvers sign with
``helpline approve sign``, the technician answers the device's challenge with ``helpline approve
prove``.

Then the attacker: they own the server's data directory, database, CLI and an admin's API token —
but not the org root key, an approver's key or the technician's key. Every attempt is refused by
the device; each refusal reaches the API caller (the session's ``end_reason``) and is in the
device's own audit log.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.authority.audit import verify as verify_audit
from agent.viewer import Viewer
from certs import ceremony, tls
from protocol.authority import CredentialCert, SignedCert, TechnicianStatement, decode_canonical
from tests.procs import free_port, helpline, spawn, wait_for, wait_for_port
from tests.xvfb import XvfbHandle, start_xvfb

PASSPHRASE = "correct horse battery staple"
#: The agent waits this long for a technician's proof (HELPLINE_UNATTENDED_PROOF_TIMEOUT_S).
PROOF_TIMEOUT_S = 10

pytestmark = pytest.mark.timeout(300)


@dataclass
class Org:
    """Everything the module's tests share: paths, URLs, tokens, the enrolled device."""

    tmp: Path
    config: Path
    env: dict[str, str]
    console: str
    ca: Path
    trust: Path
    root_fingerprint: str
    tokens: dict[str, str] = field(default_factory=dict)
    device_id: str = ""
    agent_state: Path = Path()
    grants: dict[str, str] = field(default_factory=dict)

    # --- the API, as a script would call it ------------------------------------------------

    def context(self) -> ssl.SSLContext:
        return tls.agent_client_context(self.ca, None, None)

    def call(self, method: str, path: str, user: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.console + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.tokens[user]}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self.context(), timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    # --- the CLI -----------------------------------------------------------------------------

    def cli(self, *args: str, user: str | None = None, check: bool = True) -> str:
        env = dict(self.env)
        if user is not None:
            env["HELPLINE_TOKEN"] = self.tokens[user]
        result = helpline(*args, env=env, check=check)
        return result.stdout + result.stderr

    def server_args(self) -> list[str]:
        return ["--server", self.console, "--ca", str(self.ca)]

    def key(self, name: str) -> tuple[Path, Path]:
        """``name``'s private key and certificate (made by :func:`certify`)."""
        return self.tmp / "workstation" / f"{name}.key", self.trust / "certs" / f"{name}.json"

    def signer(self, name: str) -> list[str]:
        key, cert = self.key(name)
        return ["--key", str(key), "--cert", str(cert), "--passphrase-file", str(self.tmp / "pass.txt")]

    # --- the device ----------------------------------------------------------------------------

    def device_audit(self) -> list[dict[str, Any]]:
        path = self.agent_state / "device-audit.jsonl"
        assert verify_audit(path).intact
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def reported(self) -> dict[str, Any]:
        status, body = self.call("GET", f"/api/v1/devices/{self.device_id}/authority", "admin")
        assert status == 200, body
        return dict(body)

    def wait_reported(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        seen: list[dict[str, Any]] = []

        def check() -> bool:
            seen[:] = [self.reported()]
            return predicate(seen[0])

        wait_for(check, timeout=20, what=what)
        return seen[0]

    def request_session(self, user: str, document_id: str | None = None, mode: str = "view") -> str:
        body: dict[str, Any] = {"mode": mode, "reason": "overnight patching"}
        if document_id is not None:
            body["document_id"] = document_id
        status, session = self.call("POST", f"/api/v1/devices/{self.device_id}/sessions", user, body)
        assert status == 201, session
        return str(session["session_id"])

    def ended(self, session_id: str, user: str) -> dict[str, Any]:
        """Wait until the session is over and return it as the API caller sees it."""
        seen: list[dict[str, Any]] = []

        def over() -> bool:
            _status, body = self.call("GET", f"/api/v1/sessions/{session_id}", user)
            seen[:] = [body]
            return body["state"] == "ended" and body["end_reason"] is not None  # the row, not only the live state

        wait_for(over, timeout=PROOF_TIMEOUT_S + 20, what=f"session {session_id} ended")
        return seen[0]

    def refused_on_device(self, session_id: str) -> dict[str, Any]:
        entries = [e for e in self.device_audit() if e["event"] == "session.unattended"
                   and e["session_id"] == session_id]
        assert len(entries) == 1 and entries[0]["accepted"] is False, entries
        return entries[0]


def certify(org: Org, name: str, kind: str, holder: str) -> str:
    """``trust keygen`` on the holder's machine, ``trust certify`` after comparing the fingerprint."""
    key, cert = org.key(name)
    pass_file = str(org.tmp / "pass.txt")
    helpline("trust", "keygen", "--out", str(key), "--passphrase-file", pass_file)
    public = ceremony.load_public_key_pem(key.with_name(key.name + ".pub").read_bytes())
    from protocol.authority import key_fingerprint

    helpline("trust", "certify", "--dir", str(org.trust), "--kind", kind, "--name", holder, "--public-key",
             str(key.with_name(key.name + ".pub")), "--days", "30", "--fingerprint", key_fingerprint(public),
             "--id", f"{name}-credential", "--out", str(cert), "--passphrase-file", pass_file)
    return decode_canonical(msgspec.json.decode(cert.read_bytes(), type=SignedCert).body, CredentialCert).credential_id


def revocations(org: Org, out: str, *, hours: float, previous: str | None = None) -> Path:
    path = org.tmp / "workstation" / out
    args = ["trust", "revoke", *org.signer("desk"), "--hours", str(hours), "--out", str(path)]
    if previous is not None:
        args += ["--previous", str(org.tmp / "workstation" / previous)]
    helpline(*args)
    return path


def init_server_pki(pki: Path) -> None:
    """The server's TLS PKI (``--discard-root`` where ``certs init`` keeps an offline TLS root: none is needed
    here); it holds no key that authorizes anything on a device."""
    result = helpline("certs", "init", "--dir", str(pki), "--server-name", "localhost", "--discard-root", check=False)
    if result.returncode != 0 and "unrecognized arguments" in result.stderr:
        result = helpline("certs", "init", "--dir", str(pki), "--server-name", "localhost", check=False)
    assert result.returncode == 0, result.stderr
    assert not (pki / "grant.key").exists() and not (pki / "grant.pub").exists()


def draft(org: Org, grant_id: str, *, signers: tuple[str, ...] = (), submit_as: str = "admin",
          **changes: Any) -> Path:
    """Alice writes a grant body, ``approve draft`` wraps it, local ``approve sign`` by ``signers``, then
    ``approve submit`` uploads it."""
    now = int(time.time())
    body: dict[str, Any] = {"grant_id": grant_id, "groups": ["lab"], "technician_names": ["Dave"],
                            "actions": ["view"], "not_before": now - 60, "not_after": now + 3 * 3600,
                            "issuer": "Alice", "issued_at": now, "reason": "overnight patching"}
    body.update(changes)
    source = org.tmp / "workstation" / f"{grant_id}.body.json"
    source.write_text(json.dumps(body))
    document = org.tmp / "workstation" / f"{grant_id}.json"
    helpline("approve", "draft", str(source), "--kind", "grant", "--out", str(document))
    for signer in signers:
        helpline("approve", "sign", str(document), *org.signer(signer), "--yes")
    org.cli("approve", "submit", str(document), *org.server_args(), user=submit_as)
    return document


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    tmp = tmp_path_factory.mktemp("authority")
    (tmp / "pass.txt").write_text(PASSPHRASE + "\n")
    (tmp / "workstation").mkdir()
    data = tmp / "data"
    init_server_pki(data / "pki")
    agent_port, console_port = free_port(), free_port()
    config = tmp / "helpline.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\nhost = "127.0.0.1"\nkeepalive_s = 5.0\n')
    env = {"HELPLINE_AGENT_PORT": str(agent_port), "HELPLINE_CONSOLE_PORT": str(console_port)}
    # The offline ceremony, on the administrator's workstation.
    trust = tmp / "workstation" / "root"
    out = helpline("trust", "init", "--out", str(trust), "--passphrase-file", str(tmp / "pass.txt")).stdout
    root_fingerprint = out.split("root fingerprint (sha256): ")[1].split()[0]
    org = Org(tmp, config, env, f"https://localhost:{console_port}", data / "pki" / "ca.pem", trust,
              root_fingerprint)
    for name, kind, holder in (("alice", "approver", "Alice"), ("bob", "approver", "Bob"),
                               ("dave", "technician", "Dave"), ("dave-approver", "approver", "Dave"),
                               ("desk", "revoker", "Security desk")):
        certify(org, name, kind, holder)
    revocations(org, "revocations-1.json", hours=1)
    display: XvfbHandle = start_xvfb(640, 480)
    try:
        with spawn("server", "--config", str(config), log=tmp / "server.log", env=env) as server:
            wait_for_port(console_port, server)
            admin_args = ["--config", str(config)]
            helpline("admin", "group", "create", "lab", *admin_args, env=env)
            for user, role, groups in (("admin", "admin", ()), ("alice", "admin", ()), ("bob", "admin", ()),
                                       ("dave", "technician", ("lab",))):
                extra = [a for g in groups for a in ("--group", g)]
                helpline("admin", "user", "create", user, "--role", role, "--generate-password", *extra, *admin_args,
                         env=env)
                token = helpline("admin", "user", "token", user, *admin_args, env=env).stdout.strip().splitlines()[-1]
                org.tokens[user] = token
            published = org.cli("trust", "publish", *org.server_args(), str(trust / "root.json"),
                                *map(str, sorted((trust / "certs").glob("*.json"))),
                                str(tmp / "workstation" / "revocations-1.json"), user="admin")
            assert "certificates: 5 added" in published and root_fingerprint in published, published
            words = helpline("admin", "token", "create", "--group", "lab", *admin_args, env=env).stdout.split()
            org.agent_state = tmp / "agent"
            helpline("agent", "enroll", words[3], words[4], "--ca-sha256", words[6], "--root-sha256",
                     root_fingerprint, "--state", str(org.agent_state))
            org.device_id = json.loads((org.agent_state / "agent.json").read_text())["device_id"]
            agent_env = {"HELPLINE_UNATTENDED_PROOF_TIMEOUT_S": str(PROOF_TIMEOUT_S), "HELPLINE_LOGGED_IN_USERS": "",
                         "DISPLAY": display.display, "HELPLINE_DISPLAY": display.display}
            with spawn("agent", "run", "--state", str(org.agent_state), log=tmp / "agent.log", env=agent_env):
                org.wait_reported(lambda r: r["reported"] and r["unattended_ok"], "the device takes the authority")
                # Two approvers sign the org's grant for group lab, Dave may use it.
                draft(org, "grant-lab-1")
                for approver in ("alice", "bob"):
                    org.cli("approve", "sign", "grant-lab-1", *org.server_args(), *org.signer(approver), "--yes",
                            user=approver)
                org.wait_reported(lambda r: "grant-lab-1" in r["accepted"], "the device holds grant-lab-1")
                yield org
    finally:
        display.stop()


def test_two_approvers_and_the_technicians_proof_start_an_unattended_session(org: Org) -> None:
    """approve list/show/sign from the CLI; Dave requests the session, the device challenges, ``approve prove``
    answers; the device starts by grant (nobody is there to ask), the tunnel opens and the screen streams."""
    draft(org, "grant-lab-2", actions=["view", "control"])
    pending = org.cli("approve", "list", *org.server_args(), user="alice")
    assert "grant-lab-2" in pending and "pending" in pending and "grant-lab-1" not in pending
    shown = org.cli("approve", "show", "grant-lab-2", *org.server_args(), user="bob")
    document = json.loads((org.tmp / "workstation" / "grant-lab-2.json").read_text())
    import hashlib

    assert hashlib.sha256(document["body"].encode()).hexdigest() in shown and "needs 2 distinct approvers" in shown
    status, view = org.call("GET", "/api/v1/documents/grant-lab-1", "alice")
    assert status == 200 and view["status"] == "approved" and {a["holder"] for a in view["approvals"]} == {
        "Alice", "Bob"} and all(a["valid"] for a in view["approvals"])

    session_id = org.request_session("dave", "grant-lab-1")
    out = org.cli("approve", "prove", *org.server_args(), "--session", session_id, *org.signer("dave"), "--yes",
                  user="dave")
    assert "accepted: the device verified Dave" in out, out
    status, session = org.call("GET", f"/api/v1/sessions/{session_id}", "dave")
    assert session["answered_by"] == "grant" and session["state"] in ("consented", "streaming"), session
    assert session["document_id"] == "grant-lab-1" and session["challenge"] is None

    async def watch() -> None:
        url = f"wss://localhost:{org.console.rsplit(':', 1)[1]}/api/v1/sessions/{session_id}/stream"
        headers = {"Origin": org.console, "Authorization": f"Bearer {org.tokens['dave']}"}
        async with Viewer(url, ssl_context=org.context(), headers=headers) as viewer:
            await viewer.wait_for_updates(1, 20)

    asyncio.run(watch())
    org.call("POST", f"/api/v1/sessions/{session_id}/end", "dave")
    accepted = [e for e in org.device_audit() if e["event"] == "session.unattended" and e["session_id"] == session_id]
    assert accepted and accepted[0]["accepted"] is True and accepted[0]["technician"] == "Dave"
    assert accepted[0]["document_id"] == "grant-lab-1" and accepted[0]["by"] == "grant"


def test_approvals_by_keys_the_root_never_certified_are_refused(org: Org) -> None:
    """The attacker makes their own root, certifies two 'approvers' with it, uploads those certificates and a
    grant they signed: the device checks the approvals against its pinned root and refuses."""
    evil = org.tmp / "attacker"
    evil.mkdir()
    helpline("trust", "init", "--out", str(evil / "root"), "--passphrase-file", str(org.tmp / "pass.txt"))
    for name in ("mallory", "trudy"):
        key = evil / f"{name}.key"
        helpline("trust", "keygen", "--out", str(key), "--passphrase-file", str(org.tmp / "pass.txt"))
        from protocol.authority import key_fingerprint

        fingerprint = key_fingerprint(ceremony.load_public_key_pem(key.with_name(key.name + ".pub").read_bytes()))
        helpline("trust", "certify", "--dir", str(evil / "root"), "--kind", "approver", "--name", name.title(),
                 "--public-key", f"{key}.pub", "--days", "30", "--fingerprint", fingerprint, "--id", f"{name}-0001",
                 "--passphrase-file", str(org.tmp / "pass.txt"))
    org.cli("trust", "publish", *org.server_args(), *map(str, (evil / "root" / "certs").glob("*.json")),
            user="admin")
    now = int(time.time())
    body = evil / "body.json"
    body.write_text(json.dumps({"grant_id": "grant-evil-1", "groups": ["lab"], "technician_names": ["Dave"],
                                "actions": ["view", "control"], "not_before": now - 60, "not_after": now + 3600,
                                "issuer": "Mallory", "issued_at": now}))
    document = evil / "grant.json"
    helpline("approve", "draft", str(body), "--kind", "grant", "--out", str(document))
    for name in ("mallory", "trudy"):
        helpline("approve", "sign", str(document), "--key", str(evil / f"{name}.key"), "--cert",
                 str(evil / "root" / "certs" / f"{name}-0001.json"), "--passphrase-file", str(org.tmp / "pass.txt"),
                 "--yes")
    org.cli("approve", "submit", str(document), *org.server_args(), user="admin")
    session = org.ended(org.request_session("admin", "grant-evil-1"), "admin")
    reason = "approval refused: credential mallory-0001: certificate is not signed by this device's root"
    assert session["answered_by"] == "grant" and reason in session["end_reason"], session
    assert reason in org.refused_on_device(session["session_id"])["reason"]
    assert any(e["event"] == "document.refused" and e["document_id"] == "grant-evil-1" and reason in e["reason"]
               for e in org.device_audit())


def test_a_replayed_grant_without_the_technicians_proof_is_refused(org: Org) -> None:
    """The properly approved grant, replayed by the attacker: without a proof the challenge expires; with
    Dave's genuine signature over another nonce (captured earlier) the device refuses it."""
    silent = org.ended(org.request_session("admin", "grant-lab-1"), "admin")
    expected = f"technician proof refused: no technician proof arrived within {PROOF_TIMEOUT_S:g} s"
    assert silent["end_reason"] == expected and silent["answered_by"] == "grant", silent
    assert org.refused_on_device(silent["session_id"])["reason"] == expected

    session_id = org.request_session("admin", "grant-lab-1")
    key_path, cert_path = org.key("dave")
    key = ceremony.decrypt_key(key_path.read_bytes(), PASSPHRASE.encode())
    cert = decode_canonical(msgspec.json.decode(cert_path.read_bytes(), type=SignedCert).body, CredentialCert)
    captured = ceremony.sign_technician_statement(key, cert.credential_id, TechnicianStatement(
        nonce=secrets.token_urlsafe(32), device_id=org.device_id, action="view", document_id="grant-lab-1",
        signed_at=time.time()))
    wait_for(lambda: org.call("GET", f"/api/v1/sessions/{session_id}", "admin")[1]["challenge"] is not None,
             what="the device's challenge")
    status, answer = org.call("POST", f"/api/v1/sessions/{session_id}/proof", "admin", msgspec.to_builtins(captured))
    replayed = "technician proof refused: technician proof is for another nonce (replayed or stale)"
    assert status == 200 and answer["state"] == "ended" and answer["end_reason"] == replayed, answer
    assert org.refused_on_device(session_id)["reason"] == replayed
    # Only the session's technician may even relay a proof.
    other = org.request_session("dave", "grant-lab-1")
    status, body = org.call("POST", f"/api/v1/sessions/{other}/proof", "admin", msgspec.to_builtins(captured))
    assert status == 403 and body["error"]["code"] == "forbidden"
    org.call("POST", f"/api/v1/sessions/{other}/end", "dave")


def test_a_withheld_revocation_list_goes_stale_and_the_device_refuses(org: Org) -> None:
    """The attacker stops relaying new revocation lists: once the last one expires, the device refuses with
    "stale" and says when it expired. A fresh list (a higher sequence) restores unattended access."""
    short = revocations(org, "revocations-2.json", hours=0.002, previous="revocations-1.json")  # 7.2 s
    org.cli("trust", "publish", *org.server_args(), str(short), user="admin")
    org.wait_reported(lambda r: r["revocation_sequence"] == 2, "the device takes list 2")
    expires = json.loads(json.loads(short.read_text())["body"])["expires_at"]
    wait_for(lambda: time.time() > expires + 0.5, timeout=15, what="list 2 expired")
    session = org.ended(org.request_session("dave", "grant-lab-1"), "dave")
    assert "grant refused: revocation list is stale (expired at " in session["end_reason"], session
    assert "stale" in org.refused_on_device(session["session_id"])["reason"]
    fresh = revocations(org, "revocations-3.json", hours=1, previous="revocations-2.json")
    org.cli("trust", "publish", *org.server_args(), str(fresh), user="admin")
    org.wait_reported(lambda r: r["unattended_ok"] and r["revocation_sequence"] == 3, "a fresh list")


def test_a_substituted_root_is_refused(org: Org) -> None:
    """The attacker relays another root (replace_root): the device refuses it, audits it, reports it, and honours
    nothing unattended while the server offers it; the real root, relayed again, restores it."""
    evil = org.tmp / "attacker-root"
    helpline("trust", "init", "--out", str(evil), "--passphrase-file", str(org.tmp / "pass.txt"))
    refused = org.cli("trust", "publish", *org.server_args(), str(evil / "root.json"), user="admin", check=False)
    assert "root_exists" in refused  # not by accident …
    org.cli("trust", "publish", *org.server_args(), str(evil / "root.json"), "--replace-root", user="admin")
    report = org.wait_reported(lambda r: not r["unattended_ok"], "the device refuses the root")
    assert report["problem"].startswith("the server offered another root: root ") and \
        "is not the root this device was installed with" in report["problem"], report
    session = org.ended(org.request_session("dave", "grant-lab-1"), "dave")
    assert "the server offered another root" in session["end_reason"], session
    assert "another root" in org.refused_on_device(session["session_id"])["reason"]
    assert any(e["event"] == "root.refused" for e in org.device_audit())
    org.cli("trust", "publish", *org.server_args(), str(org.trust / "root.json"), "--replace-root", user="admin")
    org.wait_reported(lambda r: r["unattended_ok"] and "grant-lab-1" in r["accepted"], "the real root again")


def test_a_grant_approved_by_its_own_technician_is_refused(org: Org) -> None:
    """Dave holds an approver credential too: a grant he may use, approved by Alice and himself, is refused."""
    draft(org, "grant-self-1", signers=("alice", "dave-approver"), devices=[org.device_id], groups=[])
    session = org.ended(org.request_session("dave", "grant-self-1"), "dave")
    reason = "approval refused: Dave is named as a user of grant grant-self-1 and cannot approve it"
    assert reason in session["end_reason"], session
    assert reason in org.refused_on_device(session["session_id"])["reason"]


def test_one_approver_where_policy_needs_two_is_refused(org: Org) -> None:
    """A grant for a whole group needs two distinct approvers on the device; one is refused."""
    draft(org, "grant-one-1", signers=("alice",))
    session = org.ended(org.request_session("dave", "grant-one-1"), "dave")
    reason = "grant grant-one-1 needs 2 distinct approvers, has 1"
    assert reason in session["end_reason"], session
    assert reason in org.refused_on_device(session["session_id"])["reason"]


def test_the_server_holds_no_key_that_opens_a_session(org: Org) -> None:
    """The old path is gone: no grant key under the server's data directory, no grant API, no grant command —
    a session the attacker requests without an approved document and a proof is only ever an attended one."""
    pki = org.ca.parent
    assert not (pki / "grant.key").exists() and not (pki / "grant.pub").exists()
    status, _body = org.call("POST", "/api/v1/grants", "admin", {"groups": ["lab"], "actions": ["view"]})
    assert status == 404
    gone = helpline("admin", "grant", "create", "--config", str(org.config), check=False)
    assert gone.returncode != 0 and "invalid choice" in gone.stderr
    session = org.ended(org.request_session("admin"), "admin")  # nobody is logged in to ask
    assert session["answered_by"] == "unavailable" and session["state"] == "ended", session
