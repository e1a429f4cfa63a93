"""Account administration shared by the CLI and the console API: every change is audited.

Changes that must end live access (disable, password or TOTP reset, session revocation, rights
set or removed) publish an event in the same transaction; every server node closes the matching
websockets and ends remote sessions the user may no longer run. A reset
also revokes the user's API tokens (:func:`end_credentials`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .. import audit, devices, events
from ..auth.rights import Right
from ..errors import ApiError
from ..store import Database, Transaction
from . import passwords, sessions, tokens, totp, users

USER_DISABLED = "account.user_disabled"
SESSION_REVOKED = "account.session_revoked"
#: A user's rights on a group were set or removed: live remote sessions that no longer fit end
#: (server/sessions/access.py), on every node.
RIGHTS_CHANGED = "account.rights_changed"


@dataclass(frozen=True)
class Credentials:
    """What a new account's owner must be told once."""

    user: users.User
    password: str
    totp_secret: str
    totp_uri: str


async def create_account(db: Database, username: str, role: str, *, actor: str,
                         password: str | None = None, with_totp: bool = True,
                         must_change: bool | None = None) -> Credentials:
    """A new account; a generated password (no ``password``) must be changed at the first login
    unless ``must_change`` says otherwise."""
    users.check_username(username)
    users.check_role(role)
    generated = not password
    password = password or passwords.generate_password()
    hashed = await passwords.hash_password_async(password)
    secret = totp.new_secret() if with_totp else None
    async with db.transaction() as tx:
        user = await users.create_user(tx, username, role, hashed, secret,
                                       must_change_password=generated if must_change is None else must_change)
        await audit.append_in(tx, actor, "user.create", user.id, {"username": user.username, "role": role})
    return Credentials(user, password, secret or "", totp.provisioning_uri(secret, user.username) if secret else "")


async def set_disabled(db: Database, ref: str, disabled: bool, *, actor: str) -> users.User:
    async with db.transaction() as tx:
        row = await users.require_user(tx, ref)
        await users.set_disabled(tx, row["id"], disabled)
        if disabled:
            ended = await sessions.revoke_all(tx, row["id"])
            await events.publish_in(tx, USER_DISABLED, row["id"], {"sessions": ended})
        await audit.append_in(tx, actor, "user.disable" if disabled else "user.enable", row["id"],
                              {"username": row["username"]})
        fresh = await users.get_row(tx, user_id=row["id"])
    assert fresh is not None
    return users.User.from_row(fresh)


async def end_credentials(tx: Transaction, user_id: str, reason: str, *, keep_session: str | None = None
                          ) -> dict[str, int]:
    """Revoke the user's API tokens and console sessions (all but ``keep_session``) and close their
    websockets on every node: what a password or TOTP reset must do, since whoever held the old
    secret may hold a token or a cookie made with it. Returns the counts for the audit record."""
    ended_tokens = await tokens.revoke_all(tx, user_id)
    if keep_session is None:
        ended = await sessions.revoke_all(tx, user_id)
        await events.publish_in(tx, USER_DISABLED, user_id, {"sessions": ended, "reason": reason})
    else:
        ended = await sessions.revoke_all(tx, user_id, except_id=keep_session)
        for session_id in [*ended, *ended_tokens]:  # token ids: streams opened with their tickets
            await events.publish_in(tx, SESSION_REVOKED, session_id, {"reason": reason})
    return {"tokens_revoked": len(ended_tokens), "sessions_ended": len(ended)}


async def reset_password(db: Database, ref: str, *, actor: str, password: str | None = None,
                         must_change: bool | None = None) -> str:
    """Set a new password (generated unless given), end the user's sessions and tokens; return it.
    A generated password must be changed at the next login unless ``must_change`` says otherwise."""
    generated = not password
    password = password or passwords.generate_password()
    hashed = await passwords.hash_password_async(password)
    async with db.transaction() as tx:
        row = await users.require_user(tx, ref)
        await users.set_password_hash(tx, row["id"], hashed,
                                      must_change=generated if must_change is None else must_change)
        ended = await end_credentials(tx, row["id"], "password reset")
        await audit.append_in(tx, actor, "user.reset_password", row["id"], {"username": row["username"], **ended})
    return password


async def reset_totp(db: Database, ref: str, *, actor: str) -> None:
    """Forget the TOTP secret and end the user's sessions and tokens (the old authenticator may be lost)."""
    async with db.transaction() as tx:
        row = await users.require_user(tx, ref)
        await users.reset_totp(tx, row["id"])
        ended = await end_credentials(tx, row["id"], "TOTP reset")
        await audit.append_in(tx, actor, "user.reset_totp", row["id"], {"username": row["username"], **ended})


async def unlock(db: Database, ref: str, *, actor: str) -> None:
    async with db.transaction() as tx:
        row = await users.require_user(tx, ref)
        await tx.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?", (row["id"],))
        await audit.append_in(tx, actor, "user.unlock", row["id"], {"username": row["username"]})


async def assign_rights(db: Database, ref: str, group: str, rights: Right | None, *, actor: str) -> Right:
    async with db.transaction() as tx:
        row = await users.require_user(tx, ref)
        stored = await users.set_group_rights(tx, row["id"], group, rights)
        await events.publish_in(tx, RIGHTS_CHANGED, row["id"], {"username": row["username"], "group": group})
        await audit.append_in(tx, actor, "user.assign_rights", row["id"],
                              {"username": row["username"], "group": group, "rights": stored.as_names()})
    return stored


async def remove_rights(db: Database, ref: str, group: str, *, actor: str) -> bool:
    async with db.transaction() as tx:
        row = await users.require_user(tx, ref)
        removed = await users.remove_group_rights(tx, row["id"], group)
        if removed:
            await events.publish_in(tx, RIGHTS_CHANGED, row["id"], {"username": row["username"], "group": group})
        await audit.append_in(tx, actor, "user.remove_rights", row["id"],
                              {"username": row["username"], "group": group})
    return removed


async def create_group(db: Database, name: str, *, actor: str) -> None:
    name = name.strip()
    if not name or name == "*" or len(name) > 64:
        raise ApiError(400, "invalid_group", "group name: 1-64 characters, not '*'")
    async with db.transaction() as tx:
        await devices.ensure_group(tx, name)
        await audit.append_in(tx, actor, "group.create", name, {})


async def list_groups(db: Database) -> list[str]:
    return [r["name"] for r in await db.fetchall("SELECT name FROM device_groups ORDER BY name")]


async def revoke_session(db: Database, session_id: str, *, actor: str, reason: str = "revoked") -> bool:
    async with db.transaction() as tx:
        done = await sessions.revoke(tx, session_id)
        if done:
            await events.publish_in(tx, SESSION_REVOKED, session_id, {"reason": reason})
            await audit.append_in(tx, actor, "auth.session_revoke" if reason != "logout" else "auth.logout",
                                  session_id, {"reason": reason})
    return done


async def create_token(db: Database, ref: str, name: str, ttl_s: float | None, *, actor: str) -> tokens.NewToken:
    async with db.transaction() as tx:
        row = await users.require_user(tx, ref)
        new = await tokens.create(tx, row["id"], name, ttl_s)
        await audit.append_in(tx, actor, "token.create", new.id, {"user": row["username"], "name": name,
                                                                  "expires_at": new.expires_at})
    return new


async def revoke_token(db: Database, token_id: str, *, actor: str, user_id: str | None = None) -> bool:
    """Revoke one live token (only if it belongs to ``user_id``, when given); audited."""
    async with db.transaction() as tx:
        done = await tokens.revoke(tx, token_id, user_id)
        if done:
            details: dict[str, object] = {"at": time.time()}
            if user_id is not None:
                details["user"] = user_id
            await audit.append_in(tx, actor, "token.revoke", token_id, details)
            # A stream opened with a ticket minted under this token is registered under its id.
            await events.publish_in(tx, SESSION_REVOKED, token_id, {"reason": "token revoked"})
    return done
