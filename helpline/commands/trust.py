"""``helpline trust`` and ``helpline approve`` — the offline ceremonies of the org trust root.

Run on an administrator's or approver's workstation, never on the server. This module reads and
writes the files and asks the questions; the signing is :mod:`certs.ceremony` and the checking
:mod:`certs.authority` (imported by each handler when it runs, as every registration module does).

Files: a trust directory holds ``root.key`` (Ed25519, encrypted with a passphrase, 0600),
``root.json`` (the public :class:`~protocol.authority.RootInfo`) and ``certs/`` (issued
certificates). Keys from ``trust keygen`` are encrypted too; public halves sit beside them as
``FILE.pub``.

With ``--server`` the commands talk to a Helpline server (:mod:`.trust_remote`): ``trust publish``
uploads the public files for the server to relay, ``approve list|show|sign|submit`` fetch and
sign documents there (shown and hashed here, signed here), ``approve prove`` answers a device's
challenge with a technician key.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from protocol.authority import CredentialCert, RootInfo

T = TypeVar("T")

KINDS = ("approver", "technician", "automation", "revoker")
DOCUMENT_KINDS = ("grant", "task", "fix", "release", "approver_set")


class Refused(Exception):
    """A ceremony step stops here; the message tells the operator why."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("trust", help="the offline org trust root: create, certify, revoke, rotate, back up",
                            description="Ceremonies of the org trust root. Run them on an administrator's "
                            "workstation, never on the server.")
    trust = parser.add_subparsers(dest="trust_command", metavar="ACTION", required=True)

    init = trust.add_parser("init", help="create the root key (encrypted) and print its fingerprint for agents")
    init.add_argument("--out", type=Path, required=True, help="new trust directory")
    init.add_argument("--name", default="Helpline org root", help="the root's name, shown to administrators")
    _passphrase_option(init)
    init.set_defaults(handler=_guarded(_init))

    keygen = trust.add_parser("keygen", help="create a CLI-held Ed25519 key (approver, automation or revoker)")
    keygen.add_argument("--out", type=Path, required=True, help="private key file (public half goes to FILE.pub)")
    _passphrase_option(keygen)
    keygen.set_defaults(handler=_guarded(_keygen))

    certify = trust.add_parser("certify", help="certify a public key after comparing its fingerprint",
                               description="Prints the public key's fingerprint; compare it with the one the "
                               "holder's own device shows, then run again with --fingerprint to issue.")
    _dir_option(certify)
    certify.add_argument("--kind", choices=KINDS, required=True)
    certify.add_argument("--name", required=True, help="the holder; one person gets the same name on every credential")
    key = certify.add_mutually_exclusive_group(required=True)
    key.add_argument("--public-key", type=Path, metavar="FILE", help="Ed25519 public key (PEM, from trust keygen)")
    key.add_argument("--cose-key", type=Path, metavar="FILE", help="passkey: the console's public-key JSON, or the "
                     "COSE key (CBOR, raw or base64url) with --rp-id, --webauthn-id and --origin")
    certify.add_argument("--rp-id", help="passkeys: the relying party id (the console's host name)")
    certify.add_argument("--webauthn-id", help="passkeys: the WebAuthn credential id (base64url)")
    certify.add_argument("--origin", action="append", default=[], help="passkeys: allowed origin (repeatable)")
    certify.add_argument("--days", type=int, required=True, help="validity in days (1-1825)")
    certify.add_argument("--fingerprint", metavar="HEX", help="the fingerprint the holder's device shows")
    certify.add_argument("--id", dest="credential_id", help="credential id (default: random)")
    certify.add_argument("--out", type=Path, help="certificate file (default DIR/certs/ID.json)")
    _passphrase_option(certify)
    certify.set_defaults(handler=_guarded(_certify))

    revoke = trust.add_parser("revoke", help="sign a revocation list with a revoker key",
                              description="Writes a revocation list valid for --hours. Agents stop honouring "
                              "unattended access when their list expires, so re-sign it before then.")
    revoke.add_argument("--key", type=Path, required=True, help="the revoker's private key")
    revoke.add_argument("--cert", type=Path, required=True, help="the revoker's certificate")
    revoke.add_argument("--credential", action="append", default=[], metavar="ID", help="revoke a credential")
    revoke.add_argument("--document", action="append", default=[], metavar="ID", help="revoke a document")
    revoke.add_argument("--previous", type=Path, help="the previous list: its entries carry over, sequence + 1")
    revoke.add_argument("--sequence", type=int, help="sequence number (default: previous + 1, or 1)")
    revoke.add_argument("--hours", type=float, default=24.0, help="validity (default 24; agents allow at most 24)")
    revoke.add_argument("--out", type=Path, required=True)
    _passphrase_option(revoke)
    revoke.set_defaults(handler=_guarded(_revoke))

    rotate = trust.add_parser("rotate", help="create a new root signed by the old one, and re-issue its certificates")
    _dir_option(rotate)
    rotate.add_argument("--out", type=Path, required=True, help="new trust directory")
    rotate.add_argument("--name", help="the new root's name (default: the old one's)")
    rotate.add_argument("--reason", default="", help="why (kept in the signed hand-over)")
    _passphrase_option(rotate)
    rotate.add_argument("--new-passphrase-file", type=Path, help="passphrase for the new root key")
    rotate.set_defaults(handler=_guarded(_rotate))

    split = trust.add_parser("split", help="back up the root key as M-of-N SLIP-39 shares")
    _dir_option(split)
    split.add_argument("--shares", type=int, required=True)
    split.add_argument("--threshold", type=int, required=True)
    split.add_argument("--out", type=Path, required=True, help="directory for the share files (one per custodian)")
    _passphrase_option(split)
    split.set_defaults(handler=_guarded(_split))

    recover = trust.add_parser("recover", help="rebuild the root key from enough shares")
    recover.add_argument("--share", type=Path, action="append", required=True, help="a share file (repeat)")
    recover.add_argument("--root", type=Path, help="root.json to check the recovered key against")
    recover.add_argument("--out", type=Path, required=True, help="new trust directory")
    _passphrase_option(recover)
    recover.set_defaults(handler=_guarded(_recover))

    adopt = trust.add_parser("adopt", help="upgrade: the old server-held grant key hands its agents over to this "
                             "root, once", description="For installations from before the org root: agents "
                             "enrolled then pinned the server's grant.pub and no root. The old grant key (copied "
                             "off the server) signs, once, a hand-over naming this root; publish it with 'trust "
                             "publish' and every such agent pins the root, deletes grant.pub and never honours the "
                             "old key again. Then destroy every copy of the old key (shred -u).")
    adopt.add_argument("--legacy-grant-key", type=Path, required=True, metavar="FILE",
                       help="the old pki/grant.key, copied off the server")
    adopt.add_argument("--root", type=Path, required=True, metavar="ROOT_INFO", help="root.json (from trust init)")
    adopt.add_argument("--out", type=Path, help="the hand-over file (default: handover.json beside root.json)")
    adopt.set_defaults(handler=_guarded(_adopt))

    publish = trust.add_parser("publish", help="upload root.json, rotations, certificates, revocation lists to a "
                               "server", description="The server stores and relays them to agents; agents check "
                               "each against the root fingerprint they were installed with.")
    publish.add_argument("files", type=Path, nargs="+", metavar="FILE")
    publish.add_argument("--replace-root", action="store_true",
                         help="relay this root although the server relays another (agents pinned to the old one "
                         "refuse it); a planned change is a rotation instead")
    _server_options(publish)
    publish.set_defaults(handler=_guarded(_remote("publish")))

    check = trust.add_parser("verify", help="check a signed document as an agent would")
    check.add_argument("document", type=Path)
    _dir_option(check)
    check.add_argument("--pin", required=True, help="the root fingerprint the agents were installed with")
    check.add_argument("--revocations", type=Path, help="the current revocation list")
    check.set_defaults(handler=_guarded(_verify))

    approve = sub.add_parser("approve", help="show and sign documents with a CLI-held approver key")
    actions = approve.add_subparsers(dest="approve_command", metavar="ACTION", required=True)
    draft = actions.add_parser("draft", help="wrap a document body (JSON) for approval")
    draft.add_argument("body", type=Path)
    draft.add_argument("--kind", choices=DOCUMENT_KINDS, required=True)
    draft.add_argument("--out", type=Path, required=True)
    draft.set_defaults(handler=_guarded(_draft))
    sign = actions.add_parser("sign", help="show a document, ask, and add your approval",
                              description="A document file, or with --server a document id: fetched, shown and "
                              "hashed here, signed here, and the approval uploaded.")
    sign.add_argument("document", help="document file (or, with --server, document id)")
    sign.add_argument("--key", type=Path, required=True, help="your approver private key")
    sign.add_argument("--cert", type=Path, required=True, help="your approver certificate")
    sign.add_argument("--yes", action="store_true", help="do not ask (automation)")
    sign.add_argument("--out", type=Path, help="where to write (default: the document itself)")
    _passphrase_option(sign)
    _server_options(sign, required=False)
    sign.set_defaults(handler=_guarded(_sign))

    pending = actions.add_parser("list", help="documents waiting on the server for approvals")
    pending.add_argument("--all", action="store_true", help="every document, not only pending ones")
    _server_options(pending)
    pending.set_defaults(handler=_guarded(_remote("list_documents")))
    show = actions.add_parser("show", help="fetch a document and show it (decoded and hashed here)")
    show.add_argument("document", help="document id")
    _server_options(show)
    show.set_defaults(handler=_guarded(_remote("show")))
    submit = actions.add_parser("submit", help="upload a document file (a draft or partly signed) to the server")
    submit.add_argument("document", type=Path)
    _server_options(submit)
    submit.set_defaults(handler=_guarded(_remote("submit")))
    prove = actions.add_parser("prove", help="answer a device's challenge (unattended session or task run)",
                               description="Waits for the device's challenge in the session, shows what you are "
                               "about to sign (device, action, grant), signs it with your technician key and "
                               "sends it; the device checks it against the technicians its grant names.")
    target = prove.add_mutually_exclusive_group(required=True)
    target.add_argument("--session", metavar="ID", help="the session you requested")
    target.add_argument("--run", metavar="ID", help="a run of a task you started (a task authorization naming you)")
    prove.add_argument("--key", type=Path, required=True, help="your technician private key")
    prove.add_argument("--cert", type=Path, required=True, help="your technician certificate")
    prove.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the challenge (default 30)")
    prove.add_argument("--yes", action="store_true", help="do not ask")
    _passphrase_option(prove)
    _server_options(prove)
    prove.set_defaults(handler=_guarded(_remote("prove")))


def _dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, required=True, help="the trust directory (root.key, root.json, certs/)")


def _server_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    group = parser.add_argument_group("server", "the Helpline server (the org CA verifies it; API token from "
                                      "$HELPLINE_TOKEN or --token-file)")
    group.add_argument("--server", required=required, metavar="URL", help="console URL, e.g. https://helpline:8444")
    group.add_argument("--ca", type=Path, metavar="FILE", help="the org CA certificate (PEM)")
    group.add_argument("--ca-sha256", metavar="HEX", help="or: fetch the org CA and accept it only with this "
                       "SHA-256 fingerprint")
    group.add_argument("--token-file", type=Path, metavar="FILE", help="file holding your API token")


def _remote(name: str) -> Any:
    """A handler of :mod:`.trust_remote`, imported when it runs."""

    def run(args: argparse.Namespace) -> int:
        from . import trust_remote

        if args.server is not None and (args.ca is None) == (args.ca_sha256 is None):
            raise Refused("give the org CA with exactly one of --ca FILE or --ca-sha256 HEX")
        code: int = getattr(trust_remote, name)(args)
        return code

    return run


def _passphrase_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--passphrase-file", type=Path, help="read the key's passphrase from this file "
                        "(first line) instead of asking")


def _guarded(handler: Any) -> Any:
    """Turn the expected failures of a ceremony into a message and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        import msgspec

        from certs.errors import CertError

        try:
            code: int = handler(args)
        except (Refused, CertError, OSError, msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            print(f"helpline: {exc}", file=sys.stderr)
            return 1
        return code

    return run


# --- files and passphrases ------------------------------------------------------------------------


def _passphrase(args: argparse.Namespace, *, new: bool, what: str = "key",
                file: Path | None = None) -> bytes:
    path = file if file is not None else args.passphrase_file
    if path is not None:
        lines = path.read_text().splitlines()
        return (lines[0] if lines else "").encode()
    if not sys.stdin.isatty():
        raise Refused(f"no terminal to ask for the {what} passphrase; use --passphrase-file")
    first = getpass.getpass(f"passphrase for the {what}: ")
    if new and getpass.getpass("again: ") != first:
        raise Refused("the passphrases differ")
    return first.encode()


def read_json(path: Path, kind: type[T]) -> T:
    import msgspec

    return msgspec.json.decode(path.read_bytes(), type=kind)


def _json(value: object) -> bytes:
    import msgspec

    return msgspec.json.format(msgspec.json.encode(value), indent=2) + b"\n"


def _write_public(path: Path, data: bytes) -> None:
    from common.files import atomic_write

    atomic_write(path, data, 0o644)


def _write_private(path: Path, data: bytes | str) -> None:
    from common.files import atomic_write

    atomic_write(path, data, 0o600)


def _new_directory(path: Path) -> None:
    if (path / "root.key").exists():
        raise Refused(f"{path} already holds a root key; choose another directory")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    (path / "certs").mkdir(mode=0o755, exist_ok=True)


def _load_root(directory: Path, args: argparse.Namespace) -> tuple[Ed25519PrivateKey, RootInfo]:
    from certs import ceremony
    from protocol.authority import RootInfo

    root = read_json(directory / "root.json", RootInfo)
    key = ceremony.decrypt_key((directory / "root.key").read_bytes(), _passphrase(args, new=False, what="root key"))
    ceremony.check_root_key(key, root)
    return key, root


def _save_root(directory: Path, key: Ed25519PrivateKey, root: RootInfo, passphrase: bytes) -> None:
    from certs import ceremony

    _write_private(directory / "root.key", ceremony.encrypt_key(key, passphrase))
    _write_public(directory / "root.json", _json(root))


def _show_fingerprint(label: str, hex_digest: str) -> str:
    """Fingerprint in groups of four, easier to read aloud and compare."""
    grouped = " ".join(hex_digest[i:i + 4] for i in range(0, len(hex_digest), 4))
    return f"{label}: {hex_digest}\n  ({grouped})"


# --- trust ----------------------------------------------------------------------------------------


def _init(args: argparse.Namespace) -> int:
    from certs import ceremony

    _new_directory(args.out)
    passphrase = _passphrase(args, new=True, what="new root key")
    key = ceremony.generate_key()
    root = ceremony.new_root(key, name=args.name, now=time.time())
    _save_root(args.out, key, root, passphrase)
    print(f"created the org trust root in {args.out} (root.key is encrypted; keep it offline)")
    print(_show_fingerprint("root fingerprint (sha256)", root.fingerprint))
    print("put this fingerprint into every agent's install configuration;")
    print("agents refuse any other root, whatever a server sends.")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from certs import ceremony
    from protocol.authority import fingerprint

    if args.out.exists():
        raise Refused(f"{args.out} exists; refusing to overwrite a key")
    passphrase = _passphrase(args, new=True, what="new key")
    key = ceremony.generate_key()
    _write_private(args.out, ceremony.encrypt_key(key, passphrase))
    public = args.out.with_name(args.out.name + ".pub")
    _write_public(public, ceremony.public_key_pem(key))
    print(f"wrote {args.out} (encrypted) and {public}")
    print(_show_fingerprint("public key fingerprint (sha256)", fingerprint(ceremony.raw_public(key))))
    print("read this fingerprint to the administrator at the certification ceremony.")
    return 0


def _public_key(args: argparse.Namespace) -> Any:
    from fido2.utils import websafe_decode

    from certs import ceremony

    if args.public_key is not None:
        return ceremony.load_public_key_pem(args.public_key.read_bytes())
    data = args.cose_key.read_bytes()
    if data.lstrip().startswith(b"{"):
        return _passkey_json(args, data)
    if not (args.rp_id and args.webauthn_id and args.origin):
        raise Refused("a passkey certificate needs --rp-id, --webauthn-id and at least one --origin")
    text = data.strip()
    if text and all(chr(c).isalnum() or chr(c) in "-_" for c in text):
        data = websafe_decode(text)
    return ceremony.passkey_key(data, rp_id=args.rp_id, webauthn_id=args.webauthn_id, origins=args.origin)


def _passkey_json(args: argparse.Namespace, data: bytes) -> Any:
    """A PasskeyKey as the console hands it out (GET /api/v1/passkeys/{id}/public-key), shown before use.

    Options given on the command line must agree with it. Only the COSE key is what the fingerprint
    covers; the relying party and origins are printed so the administrator checks them too.
    """
    from certs import ceremony
    from protocol.authority import PasskeyKey

    key = _decode(data, PasskeyKey)
    for option, value in (("--rp-id", args.rp_id), ("--webauthn-id", args.webauthn_id)):
        if value is not None and value != getattr(key, option[2:].replace("-", "_")):
            raise Refused(f"{option} {value} differs from the key file's")
    if args.origin and sorted(args.origin) != sorted(key.origins):
        raise Refused("--origin differs from the key file's origins")
    print(f"passkey for relying party {printable(key.rp_id)}, origins {', '.join(map(printable, key.origins))}")
    return ceremony.passkey_key(key.key_bytes(), rp_id=key.rp_id, webauthn_id=key.webauthn_id, origins=key.origins)


def _decode(data: bytes, kind: type[T]) -> T:
    import msgspec

    return msgspec.json.decode(data, type=kind)


def _certify(args: argparse.Namespace) -> int:
    import hmac

    from certs import ceremony
    from certs.authority import normalize_fingerprint
    from protocol.authority import key_fingerprint

    if not 1 <= args.days <= 1825:
        raise Refused("--days must be between 1 and 1825")
    public = _public_key(args)
    actual = key_fingerprint(public)
    print(_show_fingerprint("public key fingerprint (sha256)", actual))
    if args.fingerprint is None:
        print("compare it with the fingerprint the holder's own device shows, then run again with "
              "--fingerprint HEX", file=sys.stderr)
        return 1
    if not hmac.compare_digest(normalize_fingerprint(args.fingerprint).encode(), actual.encode()):
        raise Refused("the fingerprint does not match the public key: nothing was certified. Get the key again "
                      "from the holder's device")
    root_key, root = _load_root(args.dir, args)
    now = time.time()
    signed = ceremony.issue_cert(root_key, root, kind=args.kind, holder=args.name, public_key=public,
                                 not_before=now - 300, not_after=now + args.days * 86400, now=now,
                                 credential_id=args.credential_id)
    cert = _cert_of(signed)
    out = args.out or args.dir / "certs" / f"{cert.credential_id}.json"
    _write_public(out, _json(signed))
    print(f"certified {args.kind} {args.name!r} as credential {cert.credential_id} until "
          f"{time.strftime('%Y-%m-%d', time.gmtime(cert.not_after))}: {out}")
    return 0


def _cert_of(signed: Any) -> CredentialCert:
    from protocol.authority import CredentialCert, decode_canonical

    return decode_canonical(signed.body, CredentialCert)


def load_signer(args: argparse.Namespace, *kinds: str) -> tuple[Ed25519PrivateKey, CredentialCert]:
    """A CLI-held key and its certificate, checked to belong together and to be of one of ``kinds``."""
    from certs import ceremony
    from protocol.authority import Ed25519Key, SignedCert, b64encode

    cert = _cert_of(read_json(args.cert, SignedCert))
    if cert.kind not in kinds:
        raise Refused(f"{args.cert} certifies kind {cert.kind!r}; this needs {' or '.join(kinds)}")
    key = ceremony.decrypt_key(args.key.read_bytes(), _passphrase(args, new=False))
    if cert.public_key != Ed25519Key(raw=b64encode(ceremony.raw_public(key))):
        raise Refused(f"{args.key} is not the key {args.cert} certifies")
    if time.time() >= cert.not_after:
        print(f"warning: {args.cert} has expired; agents will refuse this signature", file=sys.stderr)
    return key, cert


def _revoke(args: argparse.Namespace) -> int:
    from certs import ceremony
    from protocol.authority import RevocationList, SignedRevocationList, decode_canonical

    if not 0 < args.hours <= 24 * 7:
        raise Refused("--hours must be more than 0 and at most 168")
    credentials, documents, sequence = set(args.credential), set(args.document), 1
    if args.previous is not None:
        previous = decode_canonical(read_json(args.previous, SignedRevocationList).body, RevocationList)
        credentials |= set(previous.credentials)
        documents |= set(previous.documents)
        sequence = previous.sequence + 1
    if args.sequence is not None:
        sequence = args.sequence
    key, cert = load_signer(args, "revoker")
    now = time.time()
    listed = RevocationList(sequence=sequence, issued_at=now, expires_at=now + args.hours * 3600,
                            credentials=sorted(credentials), documents=sorted(documents))
    _write_public(args.out, _json(ceremony.sign_revocation_list(key, cert.credential_id, listed)))
    print(f"revocation list {sequence}: {len(credentials)} credentials, {len(documents)} documents, valid until "
          f"{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(listed.expires_at))}: {args.out}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    import msgspec

    from certs import ceremony
    from certs.authority import verify_cert
    from protocol.authority import SignedCert

    old_key, old_root = _load_root(args.dir, args)
    _new_directory(args.out)
    passphrase = _passphrase(args, new=True, what="new root key", file=args.new_passphrase_file)
    now = time.time()
    new_key = ceremony.generate_key()
    new_root = ceremony.new_root(new_key, name=args.name or old_root.name, now=now)
    rotation = ceremony.rotate_root(old_key, old_root, new_root, now=now, reason=args.reason)
    _save_root(args.out, new_key, new_root, passphrase)
    _write_public(args.out / "rotation.json", _json(rotation))
    reissued = 0
    for path in sorted((args.dir / "certs").glob("*.json")):
        cert = verify_cert(read_json(path, SignedCert), root=old_root)
        if isinstance(cert, str):
            print(f"skipped {path.name}: {cert}", file=sys.stderr)
            continue
        if cert.not_after <= now:
            continue
        moved = msgspec.structs.replace(cert, root_fingerprint=new_root.fingerprint, issued_at=now)
        _write_public(args.out / "certs" / path.name, _json(ceremony.sign_cert(new_key, moved)))
        reissued += 1
    print(f"new root in {args.out}, handed over by the old root (rotation.json); {reissued} certificates re-issued")
    print(_show_fingerprint("new root fingerprint (sha256)", new_root.fingerprint))
    print("deliver rotation.json to the agents, then retire the old root key.")
    return 0


def _adopt(args: argparse.Namespace) -> int:
    from certs.legacy import decode_handover, load_legacy_private_key, sign_handover
    from protocol.authority import RootInfo

    root = read_json(args.root, RootInfo)
    out = args.out or args.root.with_name("handover.json")
    if out.exists():
        raise Refused(f"{out} exists: the hand-over is signed once; publish that one")
    key = load_legacy_private_key(args.legacy_grant_key.read_bytes())
    handover = sign_handover(key, root, now=time.time())
    body = decode_handover(handover)
    assert not isinstance(body, str)
    _write_public(out, _json(handover))
    print(f"the old grant key hands its agents over to root {printable(root.name)!r}: {out}")
    print(_show_fingerprint("root fingerprint (sha256)", root.fingerprint))
    print(_show_fingerprint("old grant key (sha256 of its public key)", body.legacy_key_sha256))
    print("check the root fingerprint against the one 'helpline trust init' printed, then:")
    print(f"  helpline trust publish {args.root} {out} --server URL --ca CA.pem")
    print("agents enrolled under the old key pin this root once, delete their grant.pub and refuse the old key")
    print(f"for ever after. Now destroy every copy of the old key: shred -u {args.legacy_grant_key} (and the")
    print("server's pki/grant.key, and any backup holding it).")
    return 0


def _split(args: argparse.Namespace) -> int:
    from certs import ceremony

    key, root = _load_root(args.dir, args)
    shares = ceremony.split_key(key, shares=args.shares, threshold=args.threshold)
    args.out.mkdir(mode=0o700, parents=True, exist_ok=True)
    for number, mnemonic in enumerate(shares, 1):
        path = args.out / f"share-{number}-of-{len(shares)}.txt"
        _write_private(path, f"# Helpline root {root.fingerprint}\n# share {number} of {len(shares)}; any "
                             f"{args.threshold} recover the root key\n{mnemonic}\n")
    print(f"wrote {len(shares)} shares to {args.out}; any {args.threshold} recover root {root.fingerprint}")
    print("give each share to a different custodian, on paper, and delete these files.")
    return 0


def _recover(args: argparse.Namespace) -> int:
    from certs import ceremony
    from protocol.authority import RootInfo

    mnemonics = []
    for path in args.share:
        lines = [line.strip() for line in path.read_text().splitlines()]
        mnemonics.append(" ".join(line for line in lines if line and not line.startswith("#")))
    key = ceremony.recover_key(mnemonics)
    if args.root is not None:
        root = read_json(args.root, RootInfo)
        ceremony.check_root_key(key, root)
    else:
        root = ceremony.new_root(key, name="Helpline org root (recovered)", now=time.time())
    _new_directory(args.out)
    _save_root(args.out, key, root, _passphrase(args, new=True, what="recovered root key"))
    print(f"recovered the root key into {args.out}")
    print(_show_fingerprint("root fingerprint (sha256)", root.fingerprint))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from certs.authority import verify_chain
    from protocol.authority import AuthorityPolicy, RootInfo, SignedCert, SignedDocument, SignedRevocationList

    root = read_json(args.dir / "root.json", RootInfo)
    certs = [read_json(path, SignedCert) for path in sorted((args.dir / "certs").glob("*.json"))]
    revocations = read_json(args.revocations, SignedRevocationList) if args.revocations else None
    verdict = verify_chain(read_json(args.document, SignedDocument), pinned_root_fingerprint=args.pin, root=root,
                           certs=certs, revocations=revocations, now=time.time(), policy=AuthorityPolicy())
    print(("allowed: " if verdict.allowed else "refused: ") + verdict.reason)
    return 0 if verdict.allowed else 1


# --- approve --------------------------------------------------------------------------------------


def _draft(args: argparse.Namespace) -> int:
    import msgspec

    from protocol.authority import BODY_TYPES, new_document

    body = msgspec.json.decode(args.body.read_bytes(), type=BODY_TYPES[args.kind])
    _write_public(args.out, _json(new_document(args.kind, body)))
    print(f"wrote {args.kind} document {args.out}; sign it with 'helpline approve sign {args.out}'")
    return 0


def printable(text: str) -> str:
    """Text safe to show on a terminal: control, format (bidi) and other invisible characters escaped."""
    return "".join(c if c == "\n" or (c.isprintable() and unicodedata.category(c) not in ("Cf", "Co", "Cn"))
                   else f"\\u{ord(c):04x}" for c in text)


def show_document(document: Any) -> Any:
    """Print a document as decoded here (kind, id, body, validity, SHA-256 of the signed text); return its body."""
    import msgspec

    from protocol.authority import body_sha256, decode_body, document_id

    body = decode_body(document.kind, document.body)
    print(f"{document.kind} {printable(document_id(body))}")
    print(printable(msgspec.json.format(document.body, indent=2)))
    for name in ("not_before", "not_after"):
        value = getattr(body, name, None)
        if isinstance(value, float):
            print(f"{name}: {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(value))}")
    print(f"sha256 of the signed text: {body_sha256(document.body)}")
    print(f"approvals so far: {len(document.approvals)}")
    return body


def confirm(args: argparse.Namespace, question: str) -> bool:
    """Ask on the terminal (``--yes`` skips); no terminal and no ``--yes`` is a refusal."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise Refused("no terminal to confirm on; pass --yes to sign without asking")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _sign(args: argparse.Namespace) -> int:
    from certs import ceremony
    from protocol.authority import SignedDocument

    if args.server is not None:
        return _remote("sign_remote")(args)  # type: ignore[no-any-return]
    path = Path(args.document)
    document = read_json(path, SignedDocument)
    show_document(document)
    if not confirm(args, "sign this document?"):
        print("not signed")
        return 1
    key, cert = load_signer(args, "approver", "automation")
    signed = ceremony.approve(document, credential_id=cert.credential_id, key=key)
    out = args.out or path
    _write_public(out, _json(signed))
    print(f"signed as {printable(cert.holder)} ({cert.credential_id}): {out}")
    return 0
