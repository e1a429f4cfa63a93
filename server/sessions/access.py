"""Live sessions follow their technician's account: disabling the user, or taking away the right
a session needs, ends it within the event watcher's poll interval, on every node.

Account changes publish events in the transaction that makes them — ``USER_DISABLED``
(disable, password or TOTP reset) and ``RIGHTS_CHANGED`` (rights set or removed), see
:mod:`server.accounts.admin` — also when the CLI makes them in another process. Each is
answered here by reading the account as it is now and ending, through the one finish path
(:class:`~.finish.Finisher`: stored end, audit, agent told, both websockets closed), every live
session of that technician that the account no longer allows: a disabled account allows none;
otherwise the session's group must still grant ``remote_view``, and ``remote_control`` too
while the session is (or asks to become) a control session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from server.accounts import admin as accounts
from server.accounts import users
from server.auth.rights import Principal, Right
from server.events import EventWatcher
from server.store import Database

from .finish import Finisher
from .live import LiveSession, LiveTable
from .teamwork import Teamwork

log = logging.getLogger(__name__)

DISABLED = "technician's account disabled"
RIGHTS_REVOKED = "technician's rights revoked"


def needed_rights(session: LiveSession, user: str | None = None) -> Right:
    """What ``user`` (default: the requester) must still hold on the session's group to stay in it: remote_view,
    and remote_control too while they control a control session (a viewer who joined, or who handed control
    over, needs only remote_view)."""
    machine = session.machine
    control = "control" in (machine.mode or machine.requested_mode, machine.pending_mode)
    people = session.people
    if user is not None and people.viewers and user != people.controller:
        control = False
    return Right.REMOTE_VIEW | (Right.REMOTE_CONTROL if control else Right.NONE)


class AccountFollower:
    def __init__(self, db: Callable[[], Database], live: LiveTable, finisher: Finisher,
                 teamwork: Teamwork | None = None) -> None:
        self._db = db
        self._live = live
        self._finisher = finisher
        #: Join and hand-off: a technician who is one of several in a session leaves it instead of ending it.
        self._teamwork = teamwork

    def follow(self, watcher: EventWatcher) -> None:
        watcher.on(accounts.USER_DISABLED, self.on_account_changed)
        watcher.on(accounts.RIGHTS_CHANGED, self.on_account_changed)

    async def on_account_changed(self, user_id: str, payload: dict[str, Any]) -> None:
        db = self._db()
        row = await users.get_row(db, user_id=user_id)
        username = row["username"] if row is not None else str(payload.get("username", ""))
        mine = [s for s in list(self._live.values())
                if (s.technician_user == username or username in s.people.viewers) and not s.finished]
        if not mine:
            return
        caller: Principal | None = None
        if row is not None and not row["disabled"]:
            caller = await users.principal_for(db, row, None)
        for session in mine:
            needed = needed_rights(session, username)
            if caller is not None and needed in caller.rights_on(session.group):
                continue
            reason = DISABLED if caller is None else RIGHTS_REVOKED
            detail = "" if caller is None else f"lacks {'+'.join(needed.as_names())} on group {session.group!r}"
            viewers = session.people.viewers
            if self._teamwork is not None and username in viewers and len(viewers) > 1:
                log.warning("removing %s from session %s: %s", username, session.session_id, reason)
                await self._teamwork.leave(session, username, how=f"removed: {reason} {detail}".strip())
                continue
            log.warning("ending session %s of %s: %s", session.session_id, username, reason)
            await self._finisher.finish(session, reason, "server", detail=detail)
