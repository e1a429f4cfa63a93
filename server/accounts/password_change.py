"""A user changing their own password (required after a generated one, allowed any time).

The current password is checked like a login: the attempt is reserved under the lockout before
the slow hash (:mod:`.lockout`), so a stolen cookie cannot guess it without limit. The new one
must pass :func:`~.passwords.check_new_password`. The change clears ``must_change_password`` and
ends every other credential made with the old password — API tokens and the other console
sessions (:func:`~.admin.end_credentials`) — keeping only the session that made it.
"""

from __future__ import annotations

import time

from .. import audit
from ..errors import ApiError
from ..store import Database
from . import admin, lockout, passwords, users


async def change_password(db: Database, user_id: str, current: str, new: str, *, session_id: str | None
                          ) -> users.User:
    """Check ``current``, store ``new``; ApiError 400 weak_password, 403 wrong_password, 423 locked."""
    row = await users.get_row(db, user_id=user_id)
    if row is None:
        raise ApiError(401, "unauthenticated", "account gone")
    passwords.check_new_password(new, current=current, username=row["username"])
    if not await lockout.reserve(db, user_id, time.time()):
        await audit.append(db, row["username"], "user.change_password_refused", user_id, {"reason": "locked"})
        raise ApiError(423, "locked", "account locked after repeated failures; try again later")
    if not await passwords.verify_password_async(current, row["password_hash"]):
        async with db.transaction() as tx:
            settled = await lockout.settle_failure(tx, user_id, time.time())
            if settled.locked:
                await audit.append_in(tx, row["username"], "auth.locked", user_id,
                                      {"failures": settled.failures, "lockout_s": lockout.LOCKOUT_S})
            await audit.append_in(tx, row["username"], "user.change_password_failed", user_id,
                                  {"reason": "wrong current password", "failures": settled.failures})
        raise ApiError(403, "wrong_password", "the current password is wrong")
    hashed = await passwords.hash_password_async(new)
    async with db.transaction() as tx:
        await users.set_password_hash(tx, user_id, hashed)  # clears must_change_password and the failure count
        ended = await admin.end_credentials(tx, user_id, "password changed", keep_session=session_id)
        await audit.append_in(tx, row["username"], "user.change_password", user_id,
                              {"username": row["username"], "was_required": bool(row["must_change_password"]),
                               **ended})
        fresh = await users.get_row(tx, user_id=user_id)
    assert fresh is not None
    return users.User.from_row(fresh)
