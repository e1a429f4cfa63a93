"""``helpline certs nats`` — the bus between nodes, locked: mutual TLS and per-node permissions on NATS.

Makes (once) the bus CA, and issues a NATS server certificate, one client certificate per node
(``--node``, each node's ``node_id``) and a nats-server configuration: TLS required, client
certificates mapped to one user per node (``verify_and_map``), JetStream on, and each node allowed
only Helpline's subjects (certs/nats.py). Run it again to add or re-key nodes: the CA is kept, only the
nodes named get new keys, and the config pins every node's current certificate (``pinned_certs``), so a
replaced certificate is refused once nats-server reloads it. ``--dir`` gets ``ca/`` (CA key and the
bucket administrator's certificate: keep it here, offline), ``server/`` (copy it whole to the NATS
host's ``--install-dir``, which the config names) and ``nodes/``. Prints the lines each node sets in
its ``[server]`` table. ``helpline certs nats-bucket`` then creates the object store's bucket once, as
the administrator (nodes may not create or change streams).

A node's certificate lives ``--days`` (default 60, at most 90: no longer than a hand-made intermediate,
so a node's disk holds nothing long-lived); the NATS server's lives ``--server-days`` (default 365).
``--renew --node NODE`` re-certifies a node's existing key from its ``nodes/NODE.pem``: the pin stays
valid, nats-server needs no reload; copy the new .pem to the node and restart it. A delegated node
that joined with ``--bus`` renews its own with its intermediate instead.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path

#: Defaults as in certs.nats (NODE_LIFETIME, MAX_NODE_LIFETIME, LEAF_LIFETIME), repeated so that
#: registering the command does not import cryptography.
NODE_DAYS = 60
MAX_NODE_DAYS = 90
SERVER_DAYS = 365


def register(certs_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from helpline.commands.certs import _guarded

    nats = certs_sub.add_parser(
        "nats", help="NATS for several nodes: bus CA, server and node certificates, nats-server.conf",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    nats.add_argument("--dir", type=Path, required=True,
                      help="where the bus CA (ca/, stays here), server/ and nodes/ go")
    nats.add_argument("--node", action="append", default=[], metavar="NODE_ID", required=True,
                      help="a node's node_id (repeatable): it gets a client certificate and a NATS user")
    nats.add_argument("--server-name", action="append", default=[], metavar="NAME",
                      help="DNS name or IP address the nodes' nats_url names NATS by (repeatable; "
                           "required unless --renew)")
    nats.add_argument("--listen", default="0.0.0.0:4222", help="nats-server's listen address (default 0.0.0.0:4222)")
    nats.add_argument("--store-dir", type=Path, default=Path("/var/lib/nats"),
                      help="JetStream's store_dir on the NATS host (default /var/lib/nats; it adds jetstream/)")
    nats.add_argument("--install-dir", type=Path, default=Path("/etc/nats/helpline"),
                      help="where the NATS host keeps the files of server/ (default /etc/nats/helpline)")
    nats.add_argument("--days", type=int, default=NODE_DAYS,
                      help=f"the nodes' certificates' lifetime in days (default {NODE_DAYS}, at most {MAX_NODE_DAYS})")
    nats.add_argument("--server-days", type=int, default=SERVER_DAYS,
                      help=f"the NATS server's and the bucket administrator's certificates' lifetime in days "
                           f"(default {SERVER_DAYS}, at most 3650)")
    nats.add_argument("--renew", action="store_true",
                      help="only re-certify the named nodes' existing keys for --days (same pin: no nats-server "
                           "reload); writes nodes/NODE.pem and nothing else")
    nats.set_defaults(handler=_guarded(_nats))
    bucket = certs_sub.add_parser(
        "nats-bucket", help="create the object store's bucket on the secured NATS, as its administrator (once)",
        description="Connects with ca/admin.pem from 'helpline certs nats' and creates the JetStream object "
                    "store bucket helpline-artifacts if it is missing; nodes may not create streams.")
    bucket.add_argument("--dir", type=Path, required=True, help="the --dir given to 'helpline certs nats'")
    bucket.add_argument("--url", required=True, help="tls://HOST:PORT of nats-server")
    bucket.add_argument("--replicas", type=int, default=1, help="copies in a NATS cluster (default 1)")
    bucket.set_defaults(handler=_guarded(_bucket))


def _bucket(args: argparse.Namespace) -> int:
    from certs.nats import BUCKET, BusPaths, create_bucket

    if not 1 <= args.replicas <= 5:
        raise ValueError("--replicas must be between 1 and 5")
    said = asyncio.run(create_bucket(BusPaths(args.dir), args.url, replicas=args.replicas))
    print(f"bucket {BUCKET}: {said}")
    return 0


def _node_days(days: int) -> int:
    from helpline.commands.certs import Refused

    if not 1 <= days <= MAX_NODE_DAYS:
        raise Refused(f"--days: a node's bus certificate lives 1 to {MAX_NODE_DAYS} days "
                      "(--server-days sets the NATS server's)")
    return days


def _renew(args: argparse.Namespace) -> int:
    from certs.nats import renew_nodes

    days = _node_days(args.days)
    written = renew_nodes(args.dir, list(args.node), now=datetime.now(UTC), days=days)
    for pem in written:
        node = pem.stem
        print(f"renewed {pem} for {days} days (same key: the pin in nats-server.conf stays, no reload needed)")
        print(f"# node {node}: copy {pem} to its nats_tls_cert (e.g. /etc/helpline/nats/{node}.pem), "
              "then restart the server there")
    return 0


def _nats(args: argparse.Namespace) -> int:
    from certs.nats import write_bus
    from helpline.commands.certs import Refused

    if args.renew:
        return _renew(args)
    _node_days(args.days)
    if not 1 <= args.server_days <= 3650:
        raise Refused("--server-days: the NATS server's certificate lives 1 to 3650 days")
    if not args.server_name:
        raise Refused("--server-name: name the NATS server as the nodes' nats_url will (required unless --renew)")
    paths = write_bus(args.dir, list(args.node), list(args.server_name), now=datetime.now(UTC), listen=args.listen,
                      store_dir=args.store_dir, days=args.days, server_days=args.server_days,
                      install_dir=args.install_dir)
    port = args.listen.rpartition(":")[2] or "4222"
    print(f"nats-server: copy {paths.server_dir}/ to {args.install_dir}/ on the NATS host (key 0600), then "
          f"nats-server -c {args.install_dir / paths.config.name}; on a re-run, 'nats-server --signal reload' "
          f"so replaced certificates stop working. {paths.ca_dir}/ (CA key) never leaves this machine.")
    print(f"bucket: once nats-server runs, helpline certs nats-bucket --dir {args.dir} "
          f"--url tls://{args.server_name[0]}:{port}")
    for node in args.node:
        print(f"\n# node {node}: copy ca.pem, nodes/{node}.pem and nodes/{node}.key (0600) to it, then in [server]:")
        print(f'node_id = "{node}"')
        print(f'nats_url = "tls://{args.server_name[0]}:{port}"')
        print('nats_tls_ca = "/etc/helpline/nats/ca.pem"')
        print(f'nats_tls_cert = "/etc/helpline/nats/{node}.pem"')
        print(f'nats_tls_key = "/etc/helpline/nats/{node}.key"')
    return 0
