"""The server side of ``helpline trust`` / ``helpline approve``: publish, list, show, sign, submit, prove.

The server only stores and relays; everything shown before signing is decoded and hashed *here*
from the exact signed text, never taken from the server's own rendering, and private keys never
leave this machine. Connections are verified against the org CA only (``--ca FILE`` or
``--ca-sha256 HEX``); the API token comes from ``$HELPLINE_TOKEN`` or ``--token-file`` (never the
command line, where ``ps`` shows it) and is sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .trust import Refused, confirm, load_signer, printable, read_json, show_document

TOKEN_ENV = "HELPLINE_TOKEN"  # noqa: S105 - the name of a variable, not a secret
#: Longest answer read from the server (a document list with its certificates' views).
MAX_ANSWER = 16 * 1024 * 1024


@dataclass(frozen=True)
class Server:
    """The console API, over TLS verified against the org CA, with a Bearer token."""

    url: str
    context: ssl.SSLContext
    token: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - https only, checked in connect()
            self.url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                     "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=60) as response:  # noqa: S310
                return json.loads(response.read(MAX_ANSWER) or b"null")
        except urllib.error.HTTPError as exc:
            raise Refused(f"the server answered {exc.code}: {_error_text(exc)}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise Refused(f"cannot reach {self.url}: {exc}") from exc


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read(64 * 1024))["error"]
        return f"{printable(str(error['message']))} ({printable(str(error['code']))})"
    except (ValueError, KeyError, TypeError):
        return exc.reason if isinstance(exc.reason, str) else "error"


def connect(args: argparse.Namespace) -> Server:
    from certs import tls

    url = str(args.server).rstrip("/")
    if not url.startswith("https://"):
        raise Refused("--server must be an https:// URL")
    token = _token(args.token_file)
    if args.ca is not None:
        return Server(url, tls.agent_client_context(args.ca, None, None), token)
    from certs.pinning import fetch_pinned_ca

    pem = fetch_pinned_ca(url, args.ca_sha256)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ca.pem"
        path.write_bytes(pem)
        return Server(url, tls.agent_client_context(path, None, None), token)


def _token(path: Path | None) -> str:
    token = path.read_text().strip() if path is not None else os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise Refused(f"no API token: set ${TOKEN_ENV} or give --token-file (helpline admin user token NAME)")
    return token


# --- trust publish ----------------------------------------------------------------------------------


def classify(path: Path) -> tuple[str, Any]:
    """What ``helpline trust`` file ``path`` is: root, rotation, cert, revocations or handover (decoded)."""
    import msgspec

    from protocol.authority import (
        CredentialCert,
        RootInfo,
        RootRotation,
        RootRotationBody,
        SignedCert,
        SignedRevocationList,
        decode_canonical,
    )
    from protocol.legacy import LegacyHandover, LegacyHandoverBody

    raw = path.read_bytes()
    for kind, type_, inner in (("root", RootInfo, None), ("revocations", SignedRevocationList, None),
                               ("rotation", RootRotation, RootRotationBody), ("cert", SignedCert, CredentialCert),
                               ("handover", LegacyHandover, LegacyHandoverBody)):
        try:
            value = msgspec.json.decode(raw, type=type_)
            if inner is not None:
                decode_canonical(getattr(value, "body", ""), inner)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
            continue
        return kind, value
    raise Refused(f"{path} is not a root, rotation, certificate, revocation list or hand-over written by "
                  "'helpline trust'")


def publish(args: argparse.Namespace) -> int:
    import msgspec

    upload: dict[str, Any] = {"rotations": [], "certs": []}
    for path in args.files:
        kind, value = classify(path)
        print(f"{path}: {kind}")
        if kind in ("root", "revocations", "handover"):
            if kind in upload:
                raise Refused(f"more than one {kind} file given")
            upload[kind] = msgspec.to_builtins(value)
        else:
            upload[kind + "s"].append(msgspec.to_builtins(value))
    if args.replace_root:
        upload["replace_root"] = True
    result = connect(args).call("POST", "/api/v1/authority", upload)
    if result.get("root") is not None:
        print(f"root: {printable(str(result['root']))}")
    certs = result.get("certs", {})
    print(f"certificates: {len(certs.get('added', []))} added, {len(certs.get('known', []))} already there")
    if result.get("revocations"):
        print(f"revocation list {result['revocations']['sequence']} relayed")
    if result.get("handover"):
        print(f"hand-over from the old grant key: {result['handover']}")
    current = (result.get("chain") or [{}])[-1]
    if current:
        print(f"the server relays root {printable(str(current.get('fingerprint')))}")
    print("agents check all of it against the root fingerprint they were installed with.")
    return 0


# --- approve list / show / sign / submit --------------------------------------------------------------


def list_documents(args: argparse.Namespace) -> int:
    query = "" if args.all else "?status=pending"
    documents = connect(args).call("GET", f"/api/v1/documents{query}")["documents"]
    if not documents:
        print("(none)")
        return 0
    for doc in documents:
        approvals = f"{sum(1 for a in doc['approvals'] if a['valid'])}/{doc['approvals_needed']}"
        print(f"{printable(doc['document_id']):<24} {doc['kind']:<12} {doc['status']:<9} approvals {approvals:<5} "
              f"sha256 {doc['body_sha256'][:16]}… by {printable(str(doc['created_by']))}")
    return 0


def _fetch(server: Server, document_id: str) -> tuple[Any, dict[str, Any]]:
    """The signed document (decoded from the server's raw copy, not its rendering) and the server's view."""
    import msgspec

    from protocol.authority import SignedDocument

    if not document_id or "/" in document_id or len(document_id) > 64:
        raise Refused("not a document id")
    view = server.call("GET", f"/api/v1/documents/{document_id}")
    return msgspec.convert(view["document"], SignedDocument), view


def _server_says(view: dict[str, Any]) -> None:
    print(f"the server says: {printable(str(view['status']))} — {printable(str(view['check']))}")
    for approval in view["approvals"]:
        state = "valid" if approval["valid"] else f"not valid: {printable(str(approval.get('problem', '')))}"
        print(f"  approval by {printable(str(approval['holder'] or approval['credential_id']))}: {state}")


def show(args: argparse.Namespace) -> int:
    document, view = _fetch(connect(args), args.document)
    show_document(document)
    _server_says(view)
    return 0


def sign_remote(args: argparse.Namespace) -> int:
    """Fetch, show (decoded here), confirm, sign locally, upload the approval."""
    import msgspec

    from certs import ceremony
    from protocol.authority import document_id

    server = connect(args)
    document, _view = _fetch(server, args.document)
    body = show_document(document)
    if document_id(body) != args.document:
        raise Refused(f"the server sent document {printable(document_id(body))}, not {args.document}: not signed")
    if not confirm(args, "sign this document?"):
        print("not signed")
        return 1
    key, cert = load_signer(args, "approver", "automation")
    approval = ceremony.ed25519_approval(key, cert.credential_id, document.kind, document.body.encode())
    fresh = server.call("POST", f"/api/v1/documents/{args.document}/approvals", msgspec.to_builtins(approval))
    print(f"signed as {printable(cert.holder)} ({cert.credential_id}) and uploaded")
    _server_says(fresh)
    return 0


def submit(args: argparse.Namespace) -> int:
    import msgspec

    from protocol.authority import SignedDocument, document_id

    document = read_json(args.document, SignedDocument)
    body = show_document(document)

    view = connect(args).call("POST", "/api/v1/documents", msgspec.to_builtins(document))
    print(f"submitted {document.kind} {printable(document_id(body))}; approvers sign it with "
          f"'helpline approve sign {printable(document_id(body))} --server …'")
    _server_says(view)
    return 0


# --- approve prove ----------------------------------------------------------------------------------


def prove(args: argparse.Namespace) -> int:
    """Wait for the device's challenge in the session, show it, sign it with the technician key, send it."""
    import msgspec

    from certs import ceremony
    from certs.authority import when
    from protocol.authority import TechnicianStatement

    if getattr(args, "run", None):
        return _prove_run(args)
    if not args.session or "/" in args.session or len(args.session) > 64:
        raise Refused("not a session id")
    server = connect(args)
    deadline = time.monotonic() + args.wait
    while True:
        session = server.call("GET", f"/api/v1/sessions/{args.session}")
        challenge = session.get("challenge")
        if challenge:
            break
        if session.get("state") not in ("requested", "offered"):
            raise Refused(f"session {args.session} is {session.get('state')}: "
                          f"{printable(str(session.get('end_reason') or 'no challenge to answer'))}")
        if time.monotonic() > deadline:
            raise Refused(f"the device has not sent a challenge within {args.wait:g} s")
        time.sleep(0.2)
    print(f"device {printable(challenge['device_id'])} asks you to prove who you are")
    print(f"  to {challenge['action']} it under grant {printable(challenge['document_id'])}")
    print(f"  challenge expires {when(float(challenge['expires_at']))}")
    if not confirm(args, "sign this challenge?"):
        print("not signed")
        return 1
    key, cert = load_signer(args, "technician")
    statement = TechnicianStatement(nonce=challenge["nonce"], device_id=challenge["device_id"],
                                    action=challenge["action"], document_id=challenge["document_id"],
                                    signed_at=time.time())
    proof = ceremony.sign_technician_statement(key, cert.credential_id, statement)
    answer = server.call("POST", f"/api/v1/sessions/{args.session}/proof", msgspec.to_builtins(proof))
    if answer.get("state") in ("consented", "streaming"):
        print(f"accepted: the device verified {printable(cert.holder)}; session {args.session} is "
              f"{answer['state']} (answered by {answer.get('answered_by')})")
        return 0
    if answer.get("state") == "offered":
        print(f"sent; the device has not answered yet (session {args.session} is offered)")
        return 0
    print(f"refused by the device: {printable(str(answer.get('end_reason') or answer.get('state')))}",
          file=sys.stderr)
    return 1


def _prove_run(args: argparse.Namespace) -> int:
    """The same for a task run: wait for the run's challenge, show it, sign it (action ``tasks``), send it."""
    import msgspec

    from certs import ceremony
    from certs.authority import when
    from protocol.authority import TechnicianStatement

    run_id = str(args.run)
    if "/" in run_id or len(run_id) > 64:
        raise Refused("not a run id")
    server = connect(args)
    deadline = time.monotonic() + args.wait
    while True:
        run = server.call("GET", f"/api/v1/tasks/runs/{run_id}")
        challenge = (run.get("details") or {}).get("challenge") if run.get("status") == "waiting" else None
        if challenge:
            break
        if run.get("status") not in ("queued", "sent", "waiting"):
            raise Refused(f"run {run_id} is {run.get('status')}: {printable(str(run.get('reason') or 'no challenge'))}")
        if time.monotonic() > deadline:
            raise Refused(f"the device has not sent a challenge within {args.wait:g} s")
        time.sleep(0.2)
    print(f"device {printable(challenge['device_id'])} asks you to prove who you are")
    print(f"  to run task authorization {printable(challenge['document_id'])} (run {printable(run_id)})")
    print(f"  challenge expires {when(float(challenge['expires_at']))}")
    if not confirm(args, "sign this challenge?"):
        print("not signed")
        return 1
    key, cert = load_signer(args, "technician")
    statement = TechnicianStatement(nonce=challenge["nonce"], device_id=challenge["device_id"], action="tasks",
                                    document_id=challenge["document_id"], signed_at=time.time())
    proof = ceremony.sign_technician_statement(key, cert.credential_id, statement)
    answer = server.call("POST", f"/api/v1/tasks/runs/{run_id}/proof", msgspec.to_builtins(proof))
    status = answer.get("status")
    if status in ("refused", "failed", "timed_out", "cancelled"):
        print(f"the run did not succeed ({status}): {printable(str(answer.get('reason') or ''))}", file=sys.stderr)
        return 1
    print(f"accepted: the device verified {printable(cert.holder)}; run {printable(run_id)} is {status}")
    return 0
