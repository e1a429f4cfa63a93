"""``helpline agent launch`` — the stable launcher the service runs (agent/update/launcher.py).

It starts ``agent run`` from the installation's ``current`` version (or the package's own), and
supervises a version on trial after a self-update: commit when it connects, roll back when it does not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_ROOT = Path("/opt/helpline-agent")


def register_agent(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    launch = sub.add_parser("launch", help="run the agent from the installation's current version; roll back a new "
                            "version that does not connect",
                            description="The service's command: starts 'helpline ARGS…' from ROOT/current (the "
                            "package's own version when there is none) and stays its parent. After a signed update "
                            "the new version must connect within --commit-timeout seconds, or it is stopped and the "
                            "previous version started again (it reports the rollback).")
    launch.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                        help=f"the installation root (default {DEFAULT_ROOT})")
    launch.add_argument("--commit-timeout", type=float, default=120.0,
                        help="seconds a new version has to connect (default 120)")
    launch.add_argument("args", nargs=argparse.REMAINDER,
                        help="-- then the helpline command, e.g. agent run --config …")
    launch.set_defaults(handler=_launch)


def _launch(args: argparse.Namespace) -> int:
    from agent.update import launcher

    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    return launcher.main(["--root", str(args.root), "--commit-timeout", str(args.commit_timeout), "--", *rest])
