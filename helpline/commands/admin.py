"""``helpline admin`` — tokens, devices, audit (and more, one module per area)."""

from __future__ import annotations

import argparse
import importlib

#: Modules with ``register_admin(subparsers)``; each adds one area (``admin token …``).
ADMIN_COMMANDS = ["admin_token", "admin_device", "admin_audit", "admin_user", "admin_grant",
                  "admin_script", "admin_task", "admin_export"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("admin", help="administer tokens, devices, audit …",
                            description="Administration. Works on the same --data/--config as the server, "
                            "also while the server runs.")
    admin_sub = parser.add_subparsers(dest="admin_area", metavar="AREA", required=True)
    for name in ADMIN_COMMANDS:
        importlib.import_module(f"helpline.commands.{name}").register_admin(admin_sub)
