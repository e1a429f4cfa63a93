"""``helpline`` — one command for the whole system.

Subcommands live in :mod:`helpline.commands`, one small registration module each exposing
``register(subparsers)``; handlers return the process exit code. Registration modules import only
the standard library (and ``common``): each handler imports what it runs — the server's modules,
the agent's — when it runs. So ``helpline agent run`` works where only ``helpline[agent]`` is
installed, ``helpline server`` where only ``helpline[server]`` is, and the agent's process never
loads the server's code.

A failure is one line on stderr and a non-zero exit status: 75 (EX_TEMPFAIL) when a service the
command needs is down (:class:`common.errors.Unavailable`: the database), 1 for anything else. The
traceback is printed only with ``--debug`` (accepted before or after the subcommand): a raw asyncpg
or sqlite3 traceback tells an operator less than the one line does.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
import traceback
from collections.abc import Sequence

from common.config import ConfigError
from common.errors import EXIT_UNAVAILABLE, Unavailable
from common.logs import escape
from helpline.commands import admin, agent, certs, demo, get_help, server, support, trust, viewer

#: The subcommands, in the order shown by ``--help``.
COMMANDS = (certs, server, agent, admin, demo, viewer, trust, get_help, support)

DESCRIPTION = """\
Helpline: remote IT support with asset health for the CMDB.

  helpline demo                         everything on this machine, in ./demo-data
  helpline certs init --dir DIR ...     create the org TLS root, this server's intermediate and certificate
  helpline server --data DIR            run the relay server (agents :8443, console :8444)
  helpline admin token create --group G print a one-line enrollment command for a device
  helpline agent enroll URL TOKEN ...   enroll this device
  helpline agent run                    run the agent (connects out, reconnects forever)
  helpline help                         on a device: ask IT for help (the Get help window)
  helpline support CODE                 not enrolled: one attended session with a technician's code

Run 'helpline COMMAND --help' for the options of each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="helpline", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    _add_debug(parser, default=False)
    return parser


def _add_debug(parser: argparse.ArgumentParser, *, default: object) -> None:
    """``--debug`` on ``parser`` and every subcommand below it (SUPPRESS there, so the top level's value stays)."""
    parser.add_argument("--debug", action="store_true", default=default,
                        help="on failure, print the full traceback" if default is False else argparse.SUPPRESS)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_debug(child, default=argparse.SUPPRESS)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"helpline: configuration error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = extra_providing(exc.name or "")
        if extra is None:
            return _failed(args, exc)
        print(f"helpline: 'helpline {args.command}' needs {exc.name}, which this installation lacks: "
              f"install helpline[{extra}]", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _failed(args, exc)
    return code


def _failed(args: argparse.Namespace, exc: Exception) -> int:
    """One line saying what failed (the traceback above it with --debug); the exit status."""
    if args.debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, Unavailable):
        print(f"helpline: {_one_line(exc)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    hint = "" if args.debug else " (run again with --debug for the traceback)"
    print(f"helpline: '{args.command}' failed: {type(exc).__name__}: {_one_line(exc)}{hint}", file=sys.stderr)
    return 1


def _one_line(exc: BaseException) -> str:
    """The message on one line, without terminal controls (it may quote a peer's or the database's words)."""
    text = escape(" ".join(str(exc).split()))
    return text[:500] if text else "(no message)"


def extra_providing(module: str) -> str | None:
    """The extra of the installed ``helpline`` that requires a distribution named like ``module``."""
    try:
        requirements = importlib.metadata.requires("helpline") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    wanted = _normalise(module.split(".")[0])
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9._-]+).*;.*\bextra\s*==\s*[\"']([A-Za-z0-9._-]+)[\"']", requirement)
        if match and _normalise(match[1]) == wanted and match[2] != "test":
            return match[2]
    return None


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


if __name__ == "__main__":
    sys.exit(main())
