"""``helpline certs nats`` — the bus between nodes, locked: mutual TLS and per-node permissions on NATS.

Makes (once) the bus CA, and issues a NATS server certificate, one client certificate per node
(``--node``, each node's ``node_id``) and a nats-server configuration: TLS required, client
certificates mapped to one user per node (``verify_and_map``), JetStream on, and each node allowed
only Helpline's subjects (certs/nats.py). Run it again with every node to add one: the CA is kept.
Prints the lines each node sets in its ``[server]`` table.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

LEAF_DAYS = 365


def register(certs_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from helpline.commands.certs import _guarded

    nats = certs_sub.add_parser(
        "nats", help="NATS for several nodes: bus CA, server and node certificates, nats-server.conf",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    nats.add_argument("--dir", type=Path, required=True,
                      help="where the bus CA, certificates and nats-server.conf go (keep ca.key here, offline)")
    nats.add_argument("--node", action="append", default=[], metavar="NODE_ID", required=True,
                      help="a node's node_id (repeatable): it gets a client certificate and a NATS user")
    nats.add_argument("--server-name", action="append", default=[], metavar="NAME", required=True,
                      help="DNS name or IP address the nodes' nats_url names NATS by (repeatable)")
    nats.add_argument("--listen", default="0.0.0.0:4222", help="nats-server's listen address (default 0.0.0.0:4222)")
    nats.add_argument("--store-dir", type=Path, default=Path("/var/lib/nats"),
                      help="JetStream's store_dir on the NATS host (default /var/lib/nats; it adds jetstream/)")
    nats.add_argument("--days", type=int, default=LEAF_DAYS,
                      help=f"lifetime of the server's and nodes' certificates (default {LEAF_DAYS})")
    nats.set_defaults(handler=_guarded(_nats))


def _nats(args: argparse.Namespace) -> int:
    from certs.nats import write_bus

    if not 1 <= args.days <= 3650:
        raise ValueError("--days must be between 1 and 3650")
    paths = write_bus(args.dir, list(args.node), list(args.server_name), now=datetime.now(UTC), listen=args.listen,
                      store_dir=args.store_dir, days=args.days)
    port = args.listen.rpartition(":")[2] or "4222"
    print(f"nats-server: nats-server -c {paths.config} (with {paths.server_pem.name}, {paths.server_key.name}, "
          f"{paths.ca_pem.name}; keep {paths.ca_key.name} off the NATS host)")
    for node in args.node:
        print(f"\n# node {node}: copy ca.pem, nodes/{node}.pem and nodes/{node}.key (0600) to it, then in [server]:")
        print(f'node_id = "{node}"')
        print(f'nats_url = "tls://{args.server_name[0]}:{port}"')
        print('nats_tls_ca = "/etc/helpline/nats/ca.pem"')
        print(f'nats_tls_cert = "/etc/helpline/nats/{node}.pem"')
        print(f'nats_tls_key = "/etc/helpline/nats/{node}.key"')
    return 0
