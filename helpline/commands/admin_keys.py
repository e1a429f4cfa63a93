"""``helpline admin keys init``: the keys every node of one deployment shares, made on the first node."""

from __future__ import annotations

import argparse

from .common import add_server_options, server_config


def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("keys", help="the keys all nodes share (support-code pepper, ticket and storage keys)")
    keys_sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    init = keys_sub.add_parser(
        "init", help="make the shared key files that are not there yet (first node), and print their fingerprints",
        description="Make the support-code pepper, the ticket key and the storage key in this node's data "
        "directory (storage_key_file for the storage key) if they are missing; existing keys are kept. Copy the "
        "files to every other node (mode 0600). With nats_url set a node refuses to start without them, or "
        "with keys whose fingerprints differ from the ones the first node recorded.")
    add_server_options(init)
    init.set_defaults(handler=_init)


def _init(args: argparse.Namespace) -> int:
    from common import keyfile
    from common.files import private_directory
    from server import shared_keys

    config = server_config(args)
    private_directory(config.data_dir)
    for key in shared_keys.KEYS:
        made = shared_keys.init_key(key, config)
        if made is None:
            continue
        path, created = made
        print_fingerprint = shared_keys.fingerprint(key, keyfile.read_key(path, key.size))
        state = "made" if created else "kept"
        print(f"{state} {key.name:<20} {path}  fingerprint {print_fingerprint[:16]}")
    return 0
