"""Who is at the device: logind's sessions, and the one person the service may ask.

The root service has no display of its own. It asks logind (``org.freedesktop.login1`` on the
system bus) which sessions exist — user, seat, type (x11/wayland/tty), Active, LockedHint — and
:func:`choose` picks the active, unlocked, graphical session on a seat (seat0 first). Anything
else is an honest "nobody to ask" with the reason: nobody logged in to a desktop, the login
screen or another user's session in front (fast user switching), a locked screen. The answer is
fetched afresh every time someone is to be asked (:meth:`LogindTracker.sessions`), never from a
cache, so a switch or a lock a second ago counts.

D-Bus through jeepney (pure Python, blocking I/O run in a worker thread). Tests point
``bus`` at a private dbus-daemon where a stand-in implements the same calls
(tests/fixtures/logind_standin.py).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from jeepney import DBusAddress, Properties, new_method_call
from jeepney.io.blocking import open_dbus_connection
from jeepney.wrappers import DBusErrorResponse

log = logging.getLogger(__name__)

LOGIND = "org.freedesktop.login1"
MANAGER_PATH = "/org/freedesktop/login1"
MANAGER_IFACE = "org.freedesktop.login1.Manager"
SESSION_IFACE = "org.freedesktop.login1.Session"
GRAPHICAL_TYPES = frozenset({"x11", "wayland"})
#: Seat whose active session is asked first (the machine's own screen and keyboard).
MAIN_SEAT = "seat0"
#: One D-Bus round trip may take this long before logind counts as unreachable.
CALL_TIMEOUT_S = 3.0


class TrackerUnavailable(Exception):
    """logind could not be asked (no bus, no logind, a malformed answer)."""


@dataclass(frozen=True, slots=True)
class LoginSession:
    """The parts of a logind session the service decides on."""

    session_id: str
    uid: int
    user: str
    seat: str = ""
    type: str = ""
    klass: str = "user"
    active: bool = False
    locked: bool = False
    display: str = ""
    remote: bool = False

    @property
    def graphical(self) -> bool:
        """A desktop a person sits at: x11/wayland, a user's (not the greeter's), on a seat."""
        return self.type in GRAPHICAL_TYPES and self.klass == "user" and bool(self.seat) and not self.remote


@dataclass(frozen=True, slots=True)
class Choice:
    """The session to ask, or (``session`` None) why nobody can be asked."""

    session: LoginSession | None
    reason: str = ""


def choose(sessions: list[LoginSession]) -> Choice:
    """The active unlocked graphical session (seat0 first), or why there is none. Pure."""
    graphical = [s for s in sessions if s.graphical]
    if not graphical:
        return Choice(None, "nobody is logged in to a graphical session")
    active = sorted((s for s in graphical if s.active), key=lambda s: (s.seat != MAIN_SEAT, s.seat, s.session_id))
    if not active:
        return Choice(None, "no graphical session is active (the login screen or a text console is in front)")
    chosen = active[0]
    if chosen.locked:
        return Choice(None, f"the active session ({chosen.user}) is locked")
    return Choice(chosen)


def own_session(sessions: list[LoginSession], uid: int, display: str) -> LoginSession | None:
    """The graphical session of ``uid`` showing ``display`` (or its only graphical session). Pure.

    For a helper started by the user's systemd instance, which serves every session of the user
    and so has no ``$XDG_SESSION_ID`` of its own. The service checks the claim independently.
    """
    mine = [s for s in sessions if s.uid == uid and s.graphical]
    exact = [s for s in mine if display and s.display == display]
    if len(exact) == 1:
        return exact[0]
    return mine[0] if len(mine) == 1 and not exact else None


class SessionSource(Protocol):
    """Where the broker learns about sessions: logind, or a test's list."""

    async def sessions(self) -> list[LoginSession]: ...


class LogindTracker:
    """Reads logind's sessions over D-Bus (``bus``: "SYSTEM", or a D-Bus address such as unix:path=…)."""

    def __init__(self, bus: str = "SYSTEM", timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.bus = bus
        self.timeout_s = timeout_s

    async def sessions(self) -> list[LoginSession]:
        """Every session logind knows, read now; raises :class:`TrackerUnavailable`."""
        return await asyncio.to_thread(self._query)

    def _query(self) -> list[LoginSession]:
        try:
            with open_dbus_connection(self.bus) as conn:
                manager = DBusAddress(MANAGER_PATH, bus_name=LOGIND, interface=MANAGER_IFACE)
                reply = conn.send_and_get_reply(new_method_call(manager, "ListSessions"), timeout=self.timeout_s)
                listed = _unwrap(reply)[0]
                found = []
                for entry in listed:
                    path = entry[4]
                    props = Properties(DBusAddress(path, bus_name=LOGIND, interface=SESSION_IFACE))
                    answer = conn.send_and_get_reply(props.get_all(), timeout=self.timeout_s)
                    found.append(_session(_unwrap(answer)[0]))
                return found
        except (OSError, TimeoutError, DBusErrorResponse, ValueError, KeyError, IndexError, TypeError) as exc:
            raise TrackerUnavailable(f"cannot read logind's sessions: {type(exc).__name__}: {exc}") from exc


def _unwrap(message: Any) -> tuple[Any, ...]:
    from jeepney.wrappers import unwrap_msg

    body = unwrap_msg(message)
    if not isinstance(body, tuple):
        raise ValueError("unexpected D-Bus reply")
    return body


def _value(props: dict[str, tuple[str, Any]], name: str, default: Any) -> Any:
    entry = props.get(name)
    return default if entry is None else entry[1]


def _session(props: dict[str, tuple[str, Any]]) -> LoginSession:
    """A :class:`LoginSession` from ``GetAll(org.freedesktop.login1.Session)``; types checked."""
    user = _value(props, "User", (0, "/"))
    seat = _value(props, "Seat", ("", "/"))
    session = LoginSession(
        session_id=str(_value(props, "Id", "")), uid=int(user[0]), user=str(_value(props, "Name", "")),
        seat=str(seat[0]), type=str(_value(props, "Type", "")), klass=str(_value(props, "Class", "")),
        active=bool(_value(props, "Active", False)), locked=bool(_value(props, "LockedHint", False)),
        display=str(_value(props, "Display", "")), remote=bool(_value(props, "Remote", False)),
    )
    if not session.session_id:
        raise ValueError("a session without an Id")
    return session
