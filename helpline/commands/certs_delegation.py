"""``helpline certs delegate | signer … | join`` — nodes that hold hours of authority, not months.

``delegate`` runs offline with the root: it makes the signer's directory (a delegation CA, at
most a year, its key encrypted with the signer's own passphrase). ``signer serve`` runs the
signer on its own host; ``signer add-node`` puts a node on its allow-list and prints a one-time
enrolment token; ``signer remove-node`` takes it off (its next renewal is refused); ``signer audit`` prints (and with
``--verify`` checks) the signer's hash-chained audit trail. ``join``
runs on a node: it generates the node's intermediate key, gets the intermediate from the signer
with the token, and writes ``signer.json`` so the server renews by itself from then on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: As certs.delegation (NODE_LIFETIME, MAX_NODE_LIFETIME, MAX_DELEGATION_LIFETIME), without importing cryptography.
NODE_HOURS = 48
MAX_NODE_HOURS = 7 * 24
DELEGATION_DAYS = 365


def register(certs_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from helpline.commands.certs import _guarded, _passphrase_option, _server_name_option

    delegate = certs_sub.add_parser(
        "delegate", help="with the offline root, make the node signer's delegation (about once a year)",
        description="Create (or renew) a signer directory: ca.pem, delegation.pem (path length 1, limited to the "
        "nodes' and the signer's names), delegation.key encrypted with the signer's passphrase, the signer's TLS "
        "certificate and an empty allow-list (kept on renewal). Copy it to the signer's host.")
    delegate.add_argument("--root", type=Path, required=True, help="the root's directory (from 'certs root')")
    delegate.add_argument("--out", type=Path, required=True, help="the signer's directory")
    delegate.add_argument("--signer-name", required=True, help="DNS name or IP address nodes reach the signer at")
    _server_name_option(delegate)
    delegate.add_argument("--days", type=int, default=DELEGATION_DAYS,
                          help=f"the delegation's lifetime (default and at most {DELEGATION_DAYS})")
    _passphrase_option(delegate)
    delegate.add_argument("--signer-passphrase-file", type=Path, required=True,
                          help="the passphrase (12+ characters, first line) the signer opens its key with")
    delegate.add_argument("--force", action="store_true", help="replace an existing delegation")
    delegate.set_defaults(handler=_guarded(_delegate))

    signer = certs_sub.add_parser("signer", help="the node signer: serve, and its allow-list of nodes")
    signer_sub = signer.add_subparsers(dest="signer_command", metavar="ACTION", required=True)
    serve = signer_sub.add_parser("serve", help="run the signer (TLS 1.3) until SIGTERM")
    serve.add_argument("--dir", type=Path, required=True)
    serve.add_argument("--host", required=True, help="address to listen on (the nodes must reach it)")
    serve.add_argument("--port", type=int, default=8445)
    serve.add_argument("--passphrase-file", type=Path, required=True, help="the delegation key's passphrase")
    serve.set_defaults(handler=_guarded(_serve))
    add = signer_sub.add_parser("add-node", help="allow a node (or give it a new token); prints its one-time token")
    add.add_argument("--dir", type=Path, required=True)
    add.add_argument("--node", required=True, help="the node's name (what 'certs join --node' says)")
    _server_name_option(add)
    add.add_argument("--hours", type=float, default=NODE_HOURS,
                     help=f"its intermediate's lifetime (default {NODE_HOURS}, at most {MAX_NODE_HOURS}); device "
                          "certificates end with it, so a device offline longer must enroll again")
    add.add_argument("--lifetime-seconds", type=float, help=argparse.SUPPRESS)  # tests: minutes-long intermediates
    add.set_defaults(handler=_guarded(_add_node))
    remove = signer_sub.add_parser("remove-node", help="take a node off the allow-list (it can no longer renew)")
    remove.add_argument("--dir", type=Path, required=True)
    remove.add_argument("--node", required=True)
    remove.set_defaults(handler=_guarded(_remove_node))
    trail = signer_sub.add_parser(
        "audit", help="print the signer's audit trail (issuances, refusals, nodes added and removed)",
        description="Print audit.jsonl, the signer's hash-chained record of every intermediate issued, every request "
        "refused and every node added or removed. With --verify, check the chain too: exit 1 naming the first line "
        "that no longer links (a careless edit; the chain is not keyed, so whoever can write the file can "
        "recompute it). --head prints only the checked chain's head (sequence and hash): ship it to your SIEM or "
        "ops log now and then, and compare. --repair cuts off a torn last line (a write cut short, which makes the "
        "signer refuse every request until repaired) and records that it did. --begin (once, on upgrading a signer "
        "made before the trail existed) starts the trail where there is no audit.jsonl at all.")
    trail.add_argument("--dir", type=Path, required=True)
    trail.add_argument("--verify", action="store_true", help="check the hash chain (exit 1 if broken)")
    trail.add_argument("--head", action="store_true", help="check the chain, print only its last sequence and hash")
    trail.add_argument("--repair", action="store_true", help="cut off a torn last line, recording a 'repaired' event")
    trail.add_argument("--begin", action="store_true",
                       help="upgrade: begin the trail of a signer made before it existed (only where there is no "
                            "audit.jsonl; records 'begun' with the nodes already allowed)")
    trail.set_defaults(handler=_guarded(_audit))
    bus_ca = signer_sub.add_parser(
        "bus-ca", help="give the signer the bus CA, so nodes' NATS certificates are renewed with their intermediates",
        description="Copy the bus CA ('helpline certs nats' directory, ca/) into the signer's directory, its key "
        "encrypted with the signer's passphrase. Restart the signer. A node whose bus identity is bound (bus-node) "
        "and that joined with --bus then gets a bus certificate of its intermediate's lifetime with every renewal.")
    bus_ca.add_argument("--dir", type=Path, required=True, help="the signer's directory")
    bus_ca.add_argument("--bus-dir", type=Path, required=True, help="the 'helpline certs nats --dir' directory")
    bus_ca.add_argument("--passphrase-file", type=Path, required=True, help="the signer's passphrase (as serve)")
    bus_ca.set_defaults(handler=_guarded(_bus_ca))
    bus_node = signer_sub.add_parser(
        "bus-node", help="bind a node's NATS identity and key: what its renewed bus certificate may certify",
        description="Record on the allow-list the node's NATS node id and the SPKI SHA-256 of its bus key (read "
        "from the certificate 'helpline certs nats --node' made). The signer certifies that key, for that id, "
        "and nothing else; nats-server's pinned_certs already names the same key.")
    bus_node.add_argument("--dir", type=Path, required=True)
    bus_node.add_argument("--node", required=True, help="the node's name on the allow-list")
    bus_node.add_argument("--bus-node", help="its NATS node id (default: the same name)")
    bus_node.add_argument("--bus-cert", type=Path, required=True,
                          help="its current bus certificate (the bus directory's nodes/ID.pem)")
    bus_node.set_defaults(handler=_guarded(_bus_node))
    nodes = signer_sub.add_parser("nodes", help="list the allow-list")
    nodes.add_argument("--dir", type=Path, required=True)
    nodes.set_defaults(handler=_guarded(_nodes))

    join = certs_sub.add_parser(
        "join", help="on a server node: get its intermediate from the signer, and renew from then on",
        description="Generate the node's intermediate key here, send a CSR to the signer with the one-time token, "
        "and write the node's PKI directory (ca.pem, intermediate.pem with the delegation, intermediate.key, "
        "server.pem/.key, signer.json). The server then renews its intermediate itself, without a restart.")
    join.add_argument("--dir", type=Path, required=True, help="the node's PKI directory (e.g. DATA/pki)")
    join.add_argument("--signer", required=True, help="the signer's URL, https://HOST:PORT")
    join.add_argument("--node", required=True, help="this node's name on the signer's allow-list")
    join.add_argument("--root-cert", type=Path, required=True, help="the org TLS root's certificate (ca.pem)")
    join.add_argument("--token-file", type=Path, required=True, help="file holding the enrolment token")
    join.add_argument("--bus", action="store_true",
                      help="renew the node's NATS certificate (nats_tls_cert) with its intermediate (signer bus-ca, "
                           "bus-node)")
    join.add_argument("--renew-fraction", type=float, default=0.5, help=argparse.SUPPRESS)  # tests
    join.set_defaults(handler=_guarded(_join))


def _first_line(path: Path) -> str:
    lines = Path(path).read_text().splitlines()
    return lines[0].strip() if lines else ""


def _delegate(args: argparse.Namespace) -> int:
    from certs import signer_audit
    from certs.delegation import create_delegation
    from certs.pki import RootCA
    from helpline.commands.certs import Refused, _passphrase

    if not 1 <= args.days <= DELEGATION_DAYS:
        raise Refused(f"--days: a delegation lives 1 to {DELEGATION_DAYS} days")
    signer_audit.require(args.out)  # a renewal over a directory whose trail was removed: restore it first
    root = RootCA.load(args.root, _passphrase(args, new=False))
    delegation = create_delegation(root, args.out, signer_host=args.signer_name, server_names=args.server_name,
                                   passphrase=_first_line(args.signer_passphrase_file).encode(),
                                   now=datetime.now(UTC), lifetime=timedelta(days=args.days), force=args.force)
    signer_audit.begin(args.out, "delegated", signer=args.signer_name, server_names=list(args.server_name),
                       not_after=delegation.not_after.isoformat(), by=_operator())
    print(f"delegation for the signer {args.signer_name} in {args.out}, valid until "
          f"{delegation.not_after:%Y-%m-%d %H:%M} UTC; copy the directory to the signer's host "
          "(never a node) and renew it before then")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from certs.signer_service import serve

    asyncio.run(serve(args.dir, _first_line(args.passphrase_file).encode(), args.host, args.port))
    return 0


def _operator() -> str:
    """Who ran the command (the audit record's ``by``): the login user, else the process's user id."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _shown(value: object) -> str:
    """A record's value for the terminal: a refused peer's node name may hold control characters."""
    text = ",".join(map(str, value)) if isinstance(value, list) else "" if value is None else str(value)
    return "".join(c if c.isprintable() else "?" for c in text)


def _audit(args: argparse.Namespace) -> int:
    from certs import signer_audit
    from helpline.commands.certs import Refused

    try:
        if args.begin:
            first = signer_audit.begin_upgrade(args.dir, by=_operator())
            print(f"began the audit trail: 'begun' with {first['node_count']} node(s) already allowed and no "
                  "earlier trail")
            return 0
        if args.repair:
            dropped = signer_audit.repair(args.dir, by=_operator())
            print(f"cut off a torn last line ({dropped} bytes), recorded as 'repaired'" if dropped
                  else "the last line is a whole record: nothing to repair")
            return 0
        if args.head:
            count, last = signer_audit.verify(args.dir)
            print(f"{count} {last}")
            return 0
        for record in signer_audit.records(args.dir):
            when = datetime.fromtimestamp(float(record.get("ts", 0)), UTC).strftime("%Y-%m-%d %H:%M:%S")
            skip = {"seq", "ts", "event", "node", "prev", "hash"}
            rest = " ".join(f"{k}={_shown(record[k])}" for k in sorted(record) if k not in skip)
            print(f"{record.get('seq')!s:>6} {when} {_shown(record.get('event')):<13} "
                  f"{_shown(record.get('node')) or '-':<24} {rest}")
        if args.verify:
            count, last = signer_audit.verify(args.dir)
            print(f"chain intact: {count} records, last hash {last}")
    except signer_audit.AuditError as exc:
        raise Refused(f"audit chain broken: {exc}") from exc
    return 0


def _add_node(args: argparse.Namespace) -> int:
    from certs import signer_audit
    from certs.delegation import SignerPaths, allow_node
    from helpline.commands.certs import Refused

    if not args.server_name:
        raise Refused("give the node's --server-name (its intermediate is limited to them)")
    lifetime = (timedelta(seconds=args.lifetime_seconds) if args.lifetime_seconds is not None
                else timedelta(hours=args.hours))
    # Recorded under the allow-list's lock before it is saved, as the signer records an issuance: the trail's
    # order is the allow-list's, and a change that could not be recorded is not made.
    token = allow_node(SignerPaths(args.dir), args.node, args.server_name, lifetime, now=time.time(),
                       record=lambda: signer_audit.append(args.dir, "node_added", args.node,
                                                          server_names=list(args.server_name),
                                                          lifetime_s=lifetime.total_seconds(), by=_operator()))
    print(f"node {args.node} allowed ({', '.join(args.server_name)}; intermediates of {lifetime}).")
    print("its one-time enrolment token (24 hours; give it to 'helpline certs join --token-file'):")
    print(token)
    return 0


def _remove_node(args: argparse.Namespace) -> int:
    from certs import signer_audit
    from certs.delegation import SignerPaths, remove_node
    from helpline.commands.certs import Refused

    if not remove_node(SignerPaths(args.dir), args.node,
                       record=lambda: signer_audit.append(args.dir, "node_removed", args.node, by=_operator())):
        raise Refused(f"no node {args.node!r} on the allow-list")
    print(f"node {args.node} removed: its renewals are refused; its current intermediate ends by itself")
    return 0


def _bus_ca(args: argparse.Namespace) -> int:
    from certs import signer_audit
    from certs.bus_renewal import import_bus_ca
    from certs.pki import certificate_fingerprint_sha256

    signer_audit.require(args.dir)
    cert = import_bus_ca(args.dir, args.bus_dir, _first_line(args.passphrase_file).encode())
    signer_audit.append(args.dir, "bus_ca_added", "", fingerprint=certificate_fingerprint_sha256(cert),
                        by=_operator())
    print(f"bus CA {cert.subject.rfc4514_string()} (until {cert.not_valid_after_utc:%Y-%m-%d}) stored in {args.dir}, "
          "its key encrypted; restart the signer, then bind each node with 'helpline certs signer bus-node'")
    return 0


def _bus_node(args: argparse.Namespace) -> int:
    from certs import signer_audit
    from certs.delegation import SignerPaths, bind_bus
    from certs.nats import check_node, spki_pin
    from certs.pki import load_certificate
    from helpline.commands.certs import Refused

    bus_node = check_node(args.bus_node or args.node)
    pin = spki_pin(load_certificate(args.bus_cert))
    if not bind_bus(SignerPaths(args.dir), args.node, bus_node, pin,
                    record=lambda: signer_audit.append(args.dir, "bus_bound", args.node, bus_node=bus_node,
                                                       bus_spki=pin, by=_operator())):
        raise Refused(f"no node {args.node!r} on the allow-list (helpline certs signer add-node first)")
    print(f"node {args.node}: its bus certificates are for NATS user {bus_node}, key {pin[:16]}…")
    return 0


def _nodes(args: argparse.Namespace) -> int:
    from certs.delegation import SignerPaths, load_nodes

    for name, entry in load_nodes(SignerPaths(args.dir)).items():
        token = "token pending" if entry.token_sha256 else "joined" if entry.serials else "no token"
        bus = f"  bus {entry.bus_node}" if entry.bus_node else ""
        print(f"{name:<24} {entry.lifetime_s / 3600:.1f} h  {token:<13} {', '.join(entry.server_names)}{bus}")
    return 0


def _join(args: argparse.Namespace) -> int:
    from certs.node_link import SignerLink, renew
    from certs.pki import PkiPaths, load_certificate

    paths = PkiPaths.from_dir(args.dir)
    paths.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.directory.chmod(0o700)
    load_certificate(args.root_cert)  # a certificate, not anything else
    if not paths.ca_pem.exists() or paths.ca_pem.read_bytes() != Path(args.root_cert).read_bytes():
        shutil.copyfile(args.root_cert, paths.ca_pem)
        paths.ca_pem.chmod(0o644)
    link = SignerLink(args.signer, args.node, args.renew_fraction, bus=args.bus)
    ca = asyncio.run(renew(paths.directory, link, current=None, token=_first_line(args.token_file),
                           now=datetime.now(UTC)))
    link.save(paths.directory)
    print(f"node {args.node} joined: intermediate until {ca.not_after:%Y-%m-%d %H:%M} UTC in {paths.directory}; "
          "the server renews it from the signer by itself")
    return 0
