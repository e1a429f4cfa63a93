"""``helpline admin`` — tokens, devices, audit (and more, one module per area)."""

from __future__ import annotations

import argparse

from . import (
    admin_audit,
    admin_device,
    admin_export,
    admin_keys,
    admin_lifecycle,
    admin_ops,
    admin_personal,
    admin_release,
    admin_task,
    admin_token,
    admin_user,
    admin_vulns,
)

#: One module per area (``admin token …``), in the order shown by ``--help``; each has
#: ``register_admin(subparsers)`` and imports the server's modules only when its command runs.
ADMIN_AREAS = (admin_token, admin_device, admin_audit, admin_user, admin_task, admin_release, admin_export, admin_vulns,
               admin_personal, admin_ops, admin_lifecycle, admin_keys)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("admin", help="administer tokens, devices, audit …",
                            description="Administration. Works on the same --data/--config as the server, "
                            "also while the server runs.")
    admin_sub = parser.add_subparsers(dest="admin_area", metavar="AREA", required=True)
    for area in ADMIN_AREAS:
        area.register_admin(admin_sub)
