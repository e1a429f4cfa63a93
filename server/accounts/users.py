"""User accounts and their rights per device group.

Rights are stored by name (``view_inventory,remote_view``), never as a bitmask. An admin
holds every right on every group (``*``); other roles hold what is assigned per group,
by default their role's rights (:data:`server.auth.rights.ROLE_RIGHTS`).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from ..auth.rights import ALL_RIGHTS, ANY_GROUP, ROLE_RIGHTS, Principal, Right
from ..errors import ApiError
from ..store import Database, Row, Transaction

ROLES = ("admin", "technician", "viewer")
USERNAME_MAX = 64


@dataclass(frozen=True)
class User:
    id: str
    username: str
    role: str
    disabled: bool
    totp_enrolled: bool
    created_at: float
    last_login: float | None
    locked_until: float | None
    #: The password was generated (account created or reset): the user must choose their own.
    must_change_password: bool = False

    @classmethod
    def from_row(cls, row: Row) -> User:
        return cls(row["id"], row["username"], row["role"], bool(row["disabled"]), row["totp_secret"] is not None,
                   row["created_at"], row["last_login"], row["locked_until"], bool(row["must_change_password"]))

    def as_json(self, groups: dict[str, list[str]] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "username": self.username, "role": self.role,
                               "disabled": self.disabled, "totp_enrolled": self.totp_enrolled,
                               "created_at": self.created_at, "last_login": self.last_login,
                               "locked": bool(self.locked_until and self.locked_until > time.time()),
                               "must_change_password": self.must_change_password}
        if groups is not None:
            out["groups"] = groups
        return out


def check_username(name: str) -> str:
    name = name.strip()
    if not name or len(name) > USERNAME_MAX or not all(c.isalnum() or c in "._-@" for c in name):
        raise ApiError(400, "invalid_username", "username: 1-64 letters, digits, '.', '_', '-', '@'")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ApiError(400, "invalid_role", f"role must be one of {', '.join(ROLES)}")
    return role


async def create_user(tx: Transaction, username: str, role: str, password_hash: str,
                      totp_secret: str | None, *, must_change_password: bool = False) -> User:
    username, role = check_username(username), check_role(role)
    if await tx.fetchone("SELECT id FROM users WHERE username = ?", (username,)):
        raise ApiError(409, "user_exists", f"user {username!r} already exists")
    user_id = "u_" + secrets.token_hex(8)
    now = time.time()
    await tx.execute(
        "INSERT INTO users (id, username, role, password_hash, totp_secret, created_at, must_change_password)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (user_id, username, role, password_hash, totp_secret, now, 1 if must_change_password else 0),
    )
    return User(user_id, username, role, False, totp_secret is not None, now, None, None, must_change_password)


async def get_row(db: Database | Transaction, *, user_id: str | None = None, username: str | None = None
                  ) -> Row | None:
    if user_id is not None:
        return await db.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
    return await db.fetchone("SELECT * FROM users WHERE username = ?", (username,))


async def require_user(db: Database | Transaction, ref: str) -> Row:
    """A user by id or username, or ApiError 404 ``unknown_user``."""
    row = await get_row(db, user_id=ref) or await get_row(db, username=ref)
    if row is None:
        raise ApiError(404, "unknown_user", f"no user {ref!r}")
    return row


async def list_users(db: Database) -> list[User]:
    return [User.from_row(r) for r in await db.fetchall("SELECT * FROM users ORDER BY username")]


async def group_rights(db: Database | Transaction, user_id: str) -> dict[str, Right]:
    rows = await db.fetchall("SELECT group_name, rights FROM user_group_rights WHERE user_id = ?", (user_id,))
    return {r["group_name"]: Right.parse([n for n in r["rights"].split(",") if n]) for r in rows}


async def rights_by_group(db: Database | Transaction, row: Row) -> dict[str, Right]:
    return await rights_of(db, row["id"], row["role"])


async def rights_of(db: Database | Transaction, user_id: str, role: str) -> dict[str, Right]:
    """An account's rights per device group: an admin holds every right on every group."""
    if role == "admin":
        return {ANY_GROUP: ALL_RIGHTS}
    return await group_rights(db, user_id)


async def principal_for(db: Database | Transaction, row: Row, session_id: str | None) -> Principal:
    """The caller behind a session or token row. A generated password restricts the cookie sessions it
    logs in (the enforcing middleware's gate); API tokens, made by an administrator or by the user
    after the change, are not restricted."""
    return Principal(row["id"], row["username"], row["role"], await rights_by_group(db, row), session_id,
                     must_change_password=session_id is not None and bool(row["must_change_password"]))


async def set_group_rights(tx: Transaction, user_id: str, group: str, rights: Right | None) -> Right:
    """Assign ``rights`` (default: the role's) on ``group`` (``*`` = all groups); return what was stored."""
    row = await require_user(tx, user_id)
    group = group.strip()
    if not group:
        raise ApiError(400, "invalid_group", "group name required")
    if group != ANY_GROUP and not await tx.fetchone("SELECT name FROM device_groups WHERE name = ?", (group,)):
        raise ApiError(404, "unknown_group", f"no device group {group!r}")
    value = ROLE_RIGHTS[row["role"]] if rights is None else rights
    names = ",".join(value.as_names())
    await tx.execute("DELETE FROM user_group_rights WHERE user_id = ? AND group_name = ?", (row["id"], group))
    await tx.execute("INSERT INTO user_group_rights (user_id, group_name, rights) VALUES (?, ?, ?)",
                     (row["id"], group, names))
    return value


async def remove_group_rights(tx: Transaction, user_id: str, group: str) -> bool:
    return await tx.execute("DELETE FROM user_group_rights WHERE user_id = ? AND group_name = ?",
                            (user_id, group)) > 0


async def set_disabled(tx: Transaction, user_id: str, disabled: bool) -> None:
    await tx.execute("UPDATE users SET disabled = ? WHERE id = ?", (1 if disabled else 0, user_id))


async def set_password_hash(tx: Transaction, user_id: str, password_hash: str, *,
                            must_change: bool = False) -> None:
    await tx.execute("UPDATE users SET password_hash = ?, must_change_password = ?, failed_logins = 0,"
                     " locked_until = NULL WHERE id = ?", (password_hash, 1 if must_change else 0, user_id))


async def reset_totp(tx: Transaction, user_id: str) -> None:
    """Forget the TOTP secret: the user enrolls a new one (QR code) at the next login."""
    await tx.execute("UPDATE users SET totp_secret = NULL, totp_pending = NULL, totp_last_step = 0 WHERE id = ?",
                     (user_id,))


async def set_totp_secret(tx: Transaction, user_id: str, secret: str) -> None:
    await tx.execute("UPDATE users SET totp_secret = ?, totp_pending = NULL, totp_last_step = 0 WHERE id = ?",
                     (secret, user_id))
