"""``helpline`` — one command for the whole system.

Subcommands live in :mod:`helpline.commands`, one module each, every module exposing
``register(subparsers)``; handlers return the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from common.config import ConfigError

#: Modules under helpline.commands, in the order shown by ``--help``.
COMMANDS = ["certs", "server", "agent", "admin", "demo", "viewer"]

DESCRIPTION = """\
Helpline: remote IT support with asset health for the CMDB.

  helpline demo                         everything on this machine, in ./demo-data
  helpline certs init --dir DIR ...     create the org CA, server certificate and grant key
  helpline server --data DIR            run the relay server (agents :8443, console :8444)
  helpline admin token create --group G print a one-line enrollment command for a device
  helpline agent enroll URL TOKEN ...   enroll this device
  helpline agent run                    run the agent (connects out, reconnects forever)

Run 'helpline COMMAND --help' for the options of each command.
"""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that subcommand is imported (the agent must not pay for the
    server, console and viewer modules: ~25 MB of RSS)."""
    parser = argparse.ArgumentParser(prog="helpline", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        if only is None or name == only:
            importlib.import_module(f"helpline.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments[0] if arguments and arguments[0] in COMMANDS else None)
    args = parser.parse_args(arguments)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"helpline: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
