"""``helpline admin user …`` and ``helpline admin group …`` — console accounts and rights.

The first admin is created here (or by ``helpline demo``), never by a web setup page.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import TYPE_CHECKING

from server.auth.rights import ROLE_RIGHTS, Right  # small enum module: fine to load for --help
from server.errors import ApiError  # no dependencies: fine to load for --help

from .common import add_server_options, parse_duration, print_table, server_config, with_database

if TYPE_CHECKING:
    from server.accounts import admin
    from server.store import Database


def _actor() -> str:
    return f"cli:{getpass.getuser()}"

def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_user(sub)
    _register_group(sub)

def _register_user(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("user", help="console accounts: create, list, disable, reset, rights, tokens")
    user_sub = parser.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    create = user_sub.add_parser("create", help="create an account; prints its password (once) and TOTP secret",
                                 description="Create a console account. The password is prompted for (leave "
                                 "empty to generate one) or generated when stdin is not a terminal; the TOTP "
                                 "secret and otpauth:// URI are printed for the user's authenticator app.")
    create.add_argument("name")
    create.add_argument("--role", required=True, choices=list(ROLE_RIGHTS))
    create.add_argument("--group", action="append", default=[], help="assign the role's rights on this device "
                        "group (repeatable); admins hold every right on every group anyway")
    create.add_argument("--generate-password", action="store_true", help="never prompt; generate the password")
    add_server_options(create)
    create.set_defaults(handler=_create)

    listing = user_sub.add_parser("list", help="list accounts and their rights per group")
    add_server_options(listing)
    listing.set_defaults(handler=_list)

    for action, help_text in (("disable", "disable an account; its sessions and websockets end at once"),
                              ("enable", "re-enable a disabled account"),
                              ("reset-password", "set a new generated password (shown once); ends sessions, "
                               "revokes tokens"),
                              ("reset-totp", "forget the TOTP secret (new one at next login); ends sessions, "
                               "revokes tokens"),
                              ("unlock", "clear a lockout after repeated login failures")):
        p = user_sub.add_parser(action, help=help_text)
        p.add_argument("name")
        add_server_options(p)
        p.set_defaults(handler=_simple, user_action=action)

    grant = user_sub.add_parser("grant", help="give a user rights on a device group",
                                description=f"Rights: {', '.join(Right.names())}. Default: the role's rights.")
    grant.add_argument("name")
    grant.add_argument("--group", required=True, help="device group ('*' = all groups)")
    grant.add_argument("--rights", help="comma-separated right names (default: the role's rights)")
    add_server_options(grant)
    grant.set_defaults(handler=_grant)

    ungrant = user_sub.add_parser("ungrant", help="remove a user's rights on a device group")
    ungrant.add_argument("name")
    ungrant.add_argument("--group", required=True)
    add_server_options(ungrant)
    ungrant.set_defaults(handler=_ungrant)

    token = user_sub.add_parser("token", help="create an API token (Authorization: Bearer) for scripts")
    token.add_argument("name")
    token.add_argument("--label", default="cli", help="what the token is for")
    token.add_argument("--ttl", type=parse_duration, default=None, help="lifetime (e.g. 30d); default: no expiry")
    add_server_options(token)
    token.set_defaults(handler=_token)

    token_list = user_sub.add_parser("tokens", help="list a user's API tokens (never their values)")
    token_list.add_argument("name")
    add_server_options(token_list)
    token_list.set_defaults(handler=_tokens)

    token_revoke = user_sub.add_parser("token-revoke", help="revoke one of a user's API tokens (audited)")
    token_revoke.add_argument("name")
    token_revoke.add_argument("token_id", metavar="ID", help="the token's id (t_…), as `tokens` lists it")
    add_server_options(token_revoke)
    token_revoke.set_defaults(handler=_token_revoke)

def _register_group(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("group", help="device groups")
    group_sub = parser.add_subparsers(dest="group_command", metavar="ACTION", required=True)
    create = group_sub.add_parser("create", help="create a device group")
    create.add_argument("name")
    add_server_options(create)
    create.set_defaults(handler=_group_create)
    listing = group_sub.add_parser("list", help="list device groups")
    add_server_options(listing)
    listing.set_defaults(handler=_group_list)

def _fail(exc: ApiError) -> int:
    print(f"helpline: {exc.message}", file=sys.stderr)
    return 1

def _ask_password(args: argparse.Namespace) -> str | None:
    if args.generate_password or not sys.stdin.isatty():
        return None
    first = getpass.getpass("Password (empty = generate one): ")
    if not first:
        return None
    if len(first) < 12:
        raise ApiError(400, "weak_password", "passwords must have at least 12 characters")
    if getpass.getpass("Repeat password: ") != first:
        raise ApiError(400, "mismatch", "passwords differ")
    return first

def _create(args: argparse.Namespace) -> int:
    from server.accounts import admin

    config = server_config(args)
    try:
        chosen = _ask_password(args)

        async def work(db: Database) -> admin.Credentials:
            created = await admin.create_account(db, args.name, args.role, actor=_actor(), password=chosen)
            for group in args.group:
                await admin.assign_rights(db, created.user.id, group, None, actor=_actor())
            return created

        created = with_database(config, work)
    except ApiError as exc:
        return _fail(exc)
    print(f"created {created.user.role} {created.user.username} ({created.user.id})")
    if chosen is None:
        print(f"  password     {created.password}    (shown once; changed at the first login)")
    print(f"  TOTP secret  {created.totp_secret}")
    print(f"  TOTP URI     {created.totp_uri}")
    print(f"  console      {config.console_url}")
    return 0

def _list(args: argparse.Namespace) -> int:
    from server.accounts import users

    async def work(db: Database) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for user in await users.list_users(db):
            row = await users.get_row(db, user_id=user.id)
            assert row is not None
            rights = await users.rights_by_group(db, row)
            info = user.as_json()
            rows.append({**info, "rights": "; ".join(f"{g}: {','.join(r.as_names())}" for g, r in rights.items()),
                         "last_login": time.strftime("%Y-%m-%d %H:%M", time.localtime(user.last_login))
                         if user.last_login else "never"})
        return rows

    print_table(with_database(server_config(args), work),
                ["username", "role", "disabled", "locked", "totp_enrolled", "last_login", "rights"])
    return 0

def _simple(args: argparse.Namespace) -> int:
    from server.accounts import admin

    action: str = args.user_action
    config = server_config(args)
    try:
        if action in ("disable", "enable"):
            user = with_database(config, lambda db: admin.set_disabled(db, args.name, action == "disable",
                                                                       actor=_actor()))
            print(f"{user.username} {'disabled' if user.disabled else 'enabled'}")
        elif action == "reset-password":
            password = with_database(config, lambda db: admin.reset_password(db, args.name, actor=_actor()))
            print(f"new password for {args.name}: {password}    (shown once; changed at the next login)")
        elif action == "reset-totp":
            with_database(config, lambda db: admin.reset_totp(db, args.name, actor=_actor()))
            print(f"TOTP reset for {args.name}: they enroll a new authenticator (QR code) at their next login")
        else:
            with_database(config, lambda db: admin.unlock(db, args.name, actor=_actor()))
            print(f"{args.name} unlocked")
    except ApiError as exc:
        return _fail(exc)
    return 0

def _grant(args: argparse.Namespace) -> int:
    from server.accounts import admin

    try:
        rights = Right.parse(args.rights.split(",")) if args.rights else None
        stored = with_database(server_config(args),
                               lambda db: admin.assign_rights(db, args.name, args.group, rights, actor=_actor()))
    except ValueError as exc:
        print(f"helpline: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        return _fail(exc)
    print(f"{args.name} on {args.group}: {', '.join(stored.as_names()) or '(none)'}")
    return 0

def _ungrant(args: argparse.Namespace) -> int:
    from server.accounts import admin

    try:
        removed = with_database(server_config(args),
                                lambda db: admin.remove_rights(db, args.name, args.group, actor=_actor()))
    except ApiError as exc:
        return _fail(exc)
    print(f"{args.name} on {args.group}: {'removed' if removed else 'had no rights there'}")
    return 0

def _token(args: argparse.Namespace) -> int:
    from server.accounts import admin

    try:
        new = with_database(server_config(args),
                            lambda db: admin.create_token(db, args.name, args.label, args.ttl, actor=_actor()))
    except ApiError as exc:
        return _fail(exc)
    print(f"API token {new.id} for {args.name} (shown once; send as 'Authorization: Bearer …'):")
    print(new.token)
    return 0

def _when(ts: float | None, empty: str) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else empty

def _tokens(args: argparse.Namespace) -> int:
    from server.accounts import tokens, users

    async def work(db: Database) -> list[dict[str, object]]:
        row = await users.require_user(db, args.name)
        now = time.time()
        return [{"id": t["id"], "label": t["name"], "created": _when(t["created_at"], "-"),
                 "expires": _when(t["expires_at"], "never"), "last_used": _when(t["last_used"], "never"),
                 "state": "revoked" if t["revoked_at"] else "expired" if t["expires_at"] and t["expires_at"] <= now
                 else "active"} for t in await tokens.list_for(db, row["id"])]

    try:
        rows = with_database(server_config(args), work)
    except ApiError as exc:
        return _fail(exc)
    print_table(rows, ["id", "label", "state", "created", "expires", "last_used"])
    return 0

def _token_revoke(args: argparse.Namespace) -> int:
    from server.accounts import admin, users

    async def work(db: Database) -> bool:
        row = await users.require_user(db, args.name)
        return await admin.revoke_token(db, args.token_id, actor=_actor(), user_id=row["id"])

    try:
        done = with_database(server_config(args), work)
    except ApiError as exc:
        return _fail(exc)
    if not done:
        print(f"helpline: {args.name} has no active token {args.token_id}", file=sys.stderr)
        return 1
    print(f"token {args.token_id} of {args.name} revoked")
    return 0

def _group_create(args: argparse.Namespace) -> int:
    from server.accounts import admin

    try:
        with_database(server_config(args), lambda db: admin.create_group(db, args.name, actor=_actor()))
    except ApiError as exc:
        return _fail(exc)
    print(f"group {args.name} ready")
    return 0

def _group_list(args: argparse.Namespace) -> int:
    from server.accounts import admin

    names = with_database(server_config(args), admin.list_groups)
    print_table([{"group": n} for n in names], ["group"])
    return 0

