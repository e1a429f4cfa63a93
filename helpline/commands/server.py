"""``helpline server`` — run the relay server."""

from __future__ import annotations

import argparse
import asyncio
import sys

from common.logs import setup_logging

from .common import add_server_options, server_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("server", help="run the relay server",
                            description="Run the Helpline server: the mTLS agent listener and the console/API "
                            "listener. Settings come from --config ([server] table), HELPLINE_* variables "
                            "(e.g. HELPLINE_CONSOLE_PORT), then these flags.")
    add_server_options(parser)
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--agent-port", type=int, help="agent listener port (default 8443)")
    parser.add_argument("--console-port", type=int, help="console/API listener port (default 8444)")
    parser.add_argument("--single-port", type=int, metavar="PORT",
                        help="serve agents and the console on this one port instead (e.g. 443); agents are told "
                             "to send the TLS server name agent_server_name (default agents.PUBLIC_HOST), which "
                             "the server certificate must carry")
    parser.add_argument("--public-host", help="host name agents and technicians use (default localhost)")
    parser.add_argument("--log-format", choices=["human", "json"], help="log format (default human)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from server.app import run_forever

    config = server_config(args, host=args.host, agent_port=args.agent_port, console_port=args.console_port,
                           single_port=args.single_port,
                           public_host=args.public_host, log_format=args.log_format)
    setup_logging(config.log_format, config.log_level)
    if not (config.pki_path / "ca.pem").exists():
        print(f"helpline: no PKI in {config.pki_path}; run: helpline certs init --dir {config.pki_path} "
              f"--server-name {config.public_host}" + (f" --server-name {config.agent_name}" if config.single_port
                                                       else ""), file=sys.stderr)
        return 1
    from certs.errors import CertError
    from server.ops.lock import RestoreRunning

    try:
        asyncio.run(run_forever(config))
    except (CertError, RestoreRunning) as exc:  # the root's key in the PKI directory, an expired intermediate …
        print(f"helpline: {exc}", file=sys.stderr)
        return 1
    return 0
