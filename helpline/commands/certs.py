"""``helpline certs`` — the org PKI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("certs", help="create and inspect the org PKI")
    certs_sub = parser.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    init = certs_sub.add_parser("init", help="create the org CA, a server certificate and the grant-signing key",
                                description="Create the org CA (ECDSA P-256), a server certificate for the given "
                                "names (plus localhost and 127.0.0.1) and the Ed25519 key that signs unattended-access "
                                "grants. Private keys are written with mode 0600.")
    init.add_argument("--dir", type=Path, required=True, help="directory for the PKI files (e.g. DATA/pki)")
    init.add_argument("--server-name", action="append", default=[], metavar="NAME",
                      help="DNS name or IP address agents and technicians use to reach the server (repeatable)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.set_defaults(handler=_init)
    show = certs_sub.add_parser("fingerprint", help="print the org CA's SHA-256 fingerprint")
    show.add_argument("--dir", type=Path, required=True)
    show.set_defaults(handler=_fingerprint)


def _init(args: argparse.Namespace) -> int:
    from certs.errors import PkiExistsError
    from certs.pki import CertificateAuthority, init_pki

    try:
        paths = init_pki(args.dir, args.server_name, force=args.force)
    except PkiExistsError as exc:
        print(f"helpline: {exc} (use --force to replace them)", file=sys.stderr)
        return 1
    ca = CertificateAuthority.load(paths.directory)
    print(f"created org CA, server certificate and grant key in {paths.directory}")
    print(f"CA fingerprint (sha256): {ca.fingerprint_sha256}")
    return 0


def _fingerprint(args: argparse.Namespace) -> int:
    from certs.pki import CertificateAuthority

    print(CertificateAuthority.load(args.dir).fingerprint_sha256)
    return 0
