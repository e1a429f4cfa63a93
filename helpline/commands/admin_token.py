"""``helpline admin token create`` — one-time enrollment tokens."""

from __future__ import annotations

import argparse
import getpass

from .common import add_server_options, parse_duration, server_config, with_database


def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("token", help="enrollment tokens")
    token_sub = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = token_sub.add_parser("create", help="create a one-time token and print the enroll command",
                                  description="Create an expiring enrollment token bound to a device group and "
                                  "print the one line to paste on the device.")
    create.add_argument("--group", required=True, help="device group the enrolled device joins")
    create.add_argument("--ttl", type=parse_duration, default=parse_duration("24h"), help="lifetime (default 24h)")
    create.add_argument("--uses", type=int, default=1, help="how many devices may use it (default 1)")
    add_server_options(create)
    create.set_defaults(handler=_create)


def _create(args: argparse.Namespace) -> int:
    from certs.pki import CertificateAuthority
    from server.enrollment import create_token

    config = server_config(args)
    ca = CertificateAuthority.load(config.pki_path)
    created = with_database(config, lambda db: create_token(db, group=args.group, ttl_s=args.ttl, uses=args.uses,
                                                            actor=f"cli:{getpass.getuser()}"))
    print(f"helpline agent enroll {config.console_url} {created.token} --ca-sha256 {ca.fingerprint_sha256}")
    return 0
