"""``helpline certs`` — the org TLS PKI: an offline root, an issuing intermediate per server node.

``root`` and ``intermediate`` run on an administrator's workstation (the root's key is
encrypted with a passphrase and stays there); a server node's PKI directory gets only the
intermediate, its server certificate and the root's certificate. ``init`` does all three in
one go for a single machine, and says where the root's key went.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: Defaults as in certs.pki (INTERMEDIATE_LIFETIME, MAX_INTERMEDIATE_LIFETIME, ROOT_LIFETIME),
#: repeated so that registering the command does not import cryptography.
INTERMEDIATE_DAYS = 60
MAX_INTERMEDIATE_DAYS = 90
ROOT_DAYS = 3650


class Refused(Exception):
    """A certs command cannot go on; the message says why."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("certs", help="create and inspect the org TLS PKI (root, intermediates, server)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    certs_sub = parser.add_subparsers(dest="certs_command", metavar="ACTION", required=True)

    root = certs_sub.add_parser(
        "root", help="create the org TLS root (offline, on an administrator's workstation)",
        description="Create the org TLS root CA (ECDSA P-256, ten years): ca.pem and ca.key, the key encrypted "
        "with a passphrase. Keep the directory offline; agents pin its fingerprint.")
    root.add_argument("--out", type=Path, required=True, help="directory for ca.pem and ca.key")
    root.add_argument("--days", type=int, default=ROOT_DAYS, help=f"lifetime (default {ROOT_DAYS})")
    _passphrase_option(root)
    root.add_argument("--force", action="store_true", help="overwrite an existing root")
    root.set_defaults(handler=_guarded(_root))

    inter = certs_sub.add_parser(
        "intermediate", help="issue (or rotate) a server node's intermediate and server certificate",
        description="With the offline root, issue a short-lived intermediate for one server node (path length 0, "
        "limited to the node's names) and its server certificate, into the node's PKI directory: ca.pem (the "
        "root's certificate), intermediate.pem/.key, server.pem (with the intermediate)/.key. Replacing the "
        "intermediate of the same root (rotation) needs no --force; restart the server afterwards.")
    inter.add_argument("--root", type=Path, required=True, help="the root's directory (from 'certs root')")
    inter.add_argument("--out", type=Path, required=True, help="the node's PKI directory (e.g. DATA/pki)")
    _server_name_option(inter)
    _days_option(inter)
    _passphrase_option(inter)
    inter.add_argument("--force", action="store_true", help="overwrite another root's or an old-layout directory")
    inter.set_defaults(handler=_guarded(_intermediate))

    init = certs_sub.add_parser(
        "init", help="root, intermediate and server certificate in one go (a single machine)",
        description="Create the org TLS root (its key encrypted, in --root-out), an intermediate and a server "
        "certificate for the given names (plus localhost and 127.0.0.1) in --dir. Move the root's directory "
        "offline afterwards: the server needs only --dir and refuses to start while the root's key is in it.")
    init.add_argument("--dir", type=Path, required=True, help="the server's PKI directory (e.g. DATA/pki)")
    _server_name_option(init)
    init.add_argument("--root-out", type=Path,
                      help="where the root's ca.pem and encrypted ca.key go (default: DIR-root beside DIR)")
    init.add_argument("--discard-root", action="store_true",
                      help="keep no root key (demos): no intermediate can be made again, so after --days devices "
                           "must enroll anew")
    _days_option(init)
    _passphrase_option(init)
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.set_defaults(handler=_guarded(_init))

    status = certs_sub.add_parser("status", help="show the chain (root, delegation, intermediate, server) and expiry",
                                  description="Expiry of the certificates in a PKI directory (a node's, a signer's "
                                  "or the root's), root first, and when to rotate (from two-thirds of its life).")
    status.add_argument("--dir", type=Path, required=True)
    status.add_argument("--bus-cert", type=Path, metavar="PEM",
                        help="also show the node's NATS bus certificate (its nats_tls_cert)")
    status.set_defaults(handler=_guarded(_status))

    show = certs_sub.add_parser("fingerprint", help="print the org TLS root's SHA-256 fingerprint (what agents pin)")
    show.add_argument("--dir", type=Path, required=True, help="a node's or the root's PKI directory")
    show.set_defaults(handler=_guarded(_fingerprint))

    from helpline.commands import certs_delegation  # delegate, signer, join: a delegated node's short intermediates

    certs_delegation.register(certs_sub)

    from helpline.commands import certs_nats  # nats: the bus between nodes, mutual TLS and per-node permissions

    certs_nats.register(certs_sub)


def _server_name_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server-name", action="append", default=[], metavar="NAME",
                        help="DNS name or IP address agents and technicians use to reach the server (repeatable)")


def _days_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=int, default=INTERMEDIATE_DAYS,
                        help=f"the intermediate's lifetime in days (default {INTERMEDIATE_DAYS}, "
                             f"at most {MAX_INTERMEDIATE_DAYS})")


def _passphrase_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--passphrase-file", type=Path,
                        help="read the root key's passphrase from this file (first line) instead of asking")


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the expected failures into a message and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        from certs.errors import CertError

        try:
            code = handler(args)
        except (Refused, CertError, OSError, ValueError) as exc:
            print(f"helpline: {exc}", file=sys.stderr)
            return 1
        return code

    return run


def _passphrase(args: argparse.Namespace, *, new: bool) -> bytes:
    if args.passphrase_file is not None:
        lines = Path(args.passphrase_file).read_text().splitlines()
        return (lines[0] if lines else "").encode()
    if not sys.stdin.isatty():
        raise Refused("no terminal to ask for the root key's passphrase; use --passphrase-file FILE")
    first = getpass.getpass("passphrase for the org TLS root's key: ")
    if new and getpass.getpass("again: ") != first:
        raise Refused("the passphrases differ")
    return first.encode()


def _lifetime(days: int) -> timedelta:
    if not 1 <= days <= MAX_INTERMEDIATE_DAYS:
        raise Refused(f"--days: an intermediate lives 1 to {MAX_INTERMEDIATE_DAYS} days")
    return timedelta(days=days)


def _root(args: argparse.Namespace) -> int:
    from certs.pki import RootCA

    if args.days < 365:
        raise Refused("--days: a root lives at least 365 days (it signs only intermediates, which are short-lived)")
    root = RootCA.create(now=datetime.now(UTC), lifetime=timedelta(days=args.days))
    paths = root.write_files(args.out, _passphrase(args, new=True), force=args.force)
    print(f"created the org TLS root in {paths.directory} (ca.key encrypted with your passphrase)")
    print(f"root fingerprint (sha256): {root.fingerprint_sha256}")
    print("keep this directory offline; issue each server node's intermediate with "
          f"'helpline certs intermediate --root {paths.directory} --out NODE_PKI --server-name NAME'")
    return 0


def _intermediate(args: argparse.Namespace) -> int:
    from certs.pki import RootCA, install_intermediate

    lifetime = _lifetime(args.days)
    root = RootCA.load(args.root, _passphrase(args, new=False))
    now = datetime.now(UTC)
    ca = root.new_intermediate(args.server_name, now=now, lifetime=lifetime)
    paths = install_intermediate(args.out, ca, args.server_name, now=now, force=args.force)
    print(f"issued an intermediate for {', '.join(args.server_name) or 'localhost'} in {paths.directory}, "
          f"valid until {ca.not_after:%Y-%m-%d %H:%M} UTC")
    print(f"root fingerprint (sha256): {ca.fingerprint_sha256}")
    print(f"copy {paths.directory}'s files to the node's PKI directory if it is not this one, delete the copy "
          "of intermediate.key here, and restart the server")
    return 0


def _init(args: argparse.Namespace) -> int:
    from certs.errors import PkiExistsError
    from certs.pki import CertificateAuthority, init_pki

    lifetime = _lifetime(args.days)
    directory: Path = args.dir
    root_out: Path | None = None
    passphrase: bytes | None = None
    if args.discard_root:
        if args.root_out is not None:
            raise Refused("--discard-root and --root-out exclude each other")
    else:
        root_out = args.root_out or directory.parent / f"{directory.name}-root"
        passphrase = _passphrase(args, new=True)
    try:
        paths = init_pki(directory, args.server_name, force=args.force, root_out=root_out, passphrase=passphrase,
                         lifetime=lifetime)
    except PkiExistsError as exc:
        raise Refused(f"{exc} (use --force to replace them)") from exc
    ca = CertificateAuthority.load(paths.directory)
    until = f"{ca.not_after:%Y-%m-%d}"
    print(f"created the intermediate (until {until}) and the server certificate in {paths.directory}")
    print(f"root fingerprint (sha256): {ca.fingerprint_sha256}")
    if root_out is None:
        print(f"the root's key was discarded: no new intermediate can be made; devices must enroll anew after {until}")
    else:
        print(f"the org TLS root (ca.key encrypted with your passphrase) is in {root_out}: move that directory "
              "offline now (an administrator's workstation or encrypted USB key) and delete it from this machine.")
        print(f"before {until}, rotate the intermediate: helpline certs intermediate --root {root_out} "
              f"--out {paths.directory}" + "".join(f" --server-name {n}" for n in args.server_name))
    return 0


def _status(args: argparse.Namespace) -> int:
    from certs.node import bus_status, pki_status, root_key_files
    from certs.node_link import SignerLink
    from certs.pki import PkiPaths

    now = datetime.now(UTC)
    rows = pki_status(args.dir)
    if not rows:
        raise Refused(f"no certificates in {args.dir}")
    if args.bus_cert is not None:
        rows.append(bus_status(args.bus_cert))
    for row in rows:
        print(f"{row.role:<13} {row.state(now):<13} until {row.not_after:%Y-%m-%d %H:%M} UTC "
              f"({row.days_left(now):.0f} days)  rotate from {row.rotate_from:%Y-%m-%d %H:%M}  {row.subject}")
    print(f"root fingerprint (sha256): {rows[0].sha256}")
    link = SignerLink.load(args.dir)
    if link is not None:
        print(f"delegated node {link.node}: renews its intermediate from {link.url} by itself "
              f"(at {link.renew_fraction:.0%} of its life)")
    if PkiPaths.from_dir(args.dir).intermediate_pem.exists():
        for path in root_key_files(args.dir):
            print(f"WARNING: {path} holds the root's private key: a server must not; move it offline")
    return 0


def _fingerprint(args: argparse.Namespace) -> int:
    from certs.pki import PkiPaths, certificate_fingerprint_sha256, load_certificate

    print(certificate_fingerprint_sha256(load_certificate(PkiPaths.from_dir(args.dir).ca_pem)))
    return 0
