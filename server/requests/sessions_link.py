"""A session started from a support request (``request_id`` in ``POST …/sessions``).

The consent prompt names the request — the offer's ``reason`` becomes "About your request #12:
printer offline" (plus the technician's own reason), which every agent already shows — and the
request records the session: the first one sets ``first_session_at``, each writes a ``session``
event. A waiting request is claimed by the technician who connects (connecting acknowledges it).
"""

from __future__ import annotations

import contextlib

from server.auth.rights import Principal, Right
from server.errors import ApiError
from server.store import Database, Row

from . import repository as repo

REASON_MAX = 256


async def usable(db: Database, request_id: str, device_id: str, technician: Principal) -> Row:
    """The open request of this device, or a 409/404 saying why a session cannot be started from it.

    The technician needs ``remote_view`` on the request's group too (the route checked the device's): a
    request escalated to another group is that group's to claim.
    """
    row = await repo.get(db, request_id)
    if row is None or row["device_id"] != device_id or not technician.can(Right.REMOTE_VIEW, row["group_name"]):
        raise ApiError.not_found("request for this device")
    if row["state"] not in (repo.WAITING, repo.CLAIMED):
        raise ApiError.conflict("request_closed", f"the request is {row['state']}")
    return row


def offer_reason(row: Row, reason: str) -> str:
    text = f"About your request #{row['number']}: {row['summary']}"
    if reason:
        text += f" — {reason}"
    return text[:REASON_MAX]


async def started(db: Database, row: Row, session_id: str, technician: Principal) -> None:
    await repo.link_session(db, session_id, row["id"])
    current = await repo.get(db, row["id"])
    if current is not None and current["state"] == repo.WAITING:
        with contextlib.suppress(ApiError):  # claimed by someone else meanwhile: the session is still recorded
            await repo.transition(db, row["id"], "claim", actor=technician.username, actor_name=technician.username)
    await repo.record_session(db, row["id"], session_id=session_id, actor=technician.username)
