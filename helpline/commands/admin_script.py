"""``helpline admin script sign FILE`` — sign a script (and its parameters) with the org grant key."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from .common import add_server_options, server_config, with_database


def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("script", help="sign scripts for tasks")
    script_sub = parser.add_subparsers(dest="script_command", metavar="ACTION", required=True)
    sign = script_sub.add_parser("sign", help="sign FILE with the grant key; writes FILE.sig",
                                 description="Sign the SHA-256 of the script together with its parameters "
                                 "(interpreter, args) with the org grant key. Agents run a script only if this "
                                 "signature verifies, so neither the script nor its parameters can be changed later.")
    sign.add_argument("file", type=Path, help="the script")
    sign.add_argument("--params", default='{"interpreter": "sh", "args": []}',
                      help='parameters as JSON, e.g. \'{"interpreter": "bash", "args": ["--fix"]}\'')
    add_server_options(sign)
    sign.set_defaults(handler=_sign)


def parse_params(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("--params must be a JSON object")
    return value


def _sign(args: argparse.Namespace) -> int:
    from certs.grants import load_grant_private_key, sign_bytes
    from certs.pki import PkiPaths
    from protocol.tasks import MAX_SCRIPT_BYTES, script_sha256, script_signing_bytes
    from server import audit

    config = server_config(args)
    try:
        script = args.file.read_text()
        params = parse_params(args.params)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"helpline: cannot sign: {exc}", file=sys.stderr)
        return 1
    if len(script.encode()) > MAX_SCRIPT_BYTES:
        print(f"helpline: script is larger than {MAX_SCRIPT_BYTES} bytes", file=sys.stderr)
        return 1
    key = load_grant_private_key(PkiPaths.from_dir(config.pki_path).grant_key)
    signature = sign_bytes(key, script_signing_bytes(script, params))
    digest = script_sha256(script)
    sig_path = args.file.with_name(args.file.name + ".sig")
    sig_path.write_text(json.dumps({"sha256": digest, "params": params, "signature": signature}, indent=1) + "\n")
    with_database(config, lambda db: audit.append(db, f"cli:{getpass.getuser()}", "script.sign", str(args.file),
                                                  {"sha256": digest, "params": params}))
    print(f"signed {args.file} (sha256 {digest}) → {sig_path}")
    return 0
