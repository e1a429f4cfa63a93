"""A stand-in for the parts of logind the agent uses, on a private D-Bus bus.

logind cannot run here (systemd is not PID 1), so the session tracker is tested against this:
a real ``dbus-daemon`` started for the test (:func:`private_bus`) and a thread that owns
``org.freedesktop.login1`` on it and answers what :mod:`agent.desktop.tracker` calls, with
logind's names and signatures: ``Manager.ListSessions`` → ``a(susso)``, ``Manager.GetSession``,
and ``org.freedesktop.DBus.Properties.Get/GetAll`` on each session object (Id, User ``(uo)``,
Name, Seat ``(so)``, Type, Class, Active, LockedHint, Display, Remote, State). The test switches
the active session (:meth:`LogindStandIn.activate`, fast user switching) and locks one
(:meth:`LogindStandIn.lock`). Anything else gets ``UnknownMethod``, as from a real service.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from jeepney import HeaderFields, MessageType, new_error, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import DBusConnection, open_dbus_connection

LOGIND = "org.freedesktop.login1"
ROOT = "/org/freedesktop/login1"
SESSION_PREFIX = ROOT + "/session/"
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>helpline-test</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class FakeSession:
    session_id: str
    uid: int
    user: str
    display: str = ""
    seat: str = "seat0"
    type: str = "x11"
    klass: str = "user"
    active: bool = False
    locked: bool = False
    remote: bool = False


def object_path(session_id: str) -> str:
    """logind's escaping: every byte outside [A-Za-z0-9] as _xx."""
    return SESSION_PREFIX + "".join(c if c.isalnum() and c.isascii() else f"_{ord(c):02x}" for c in session_id)


@contextlib.contextmanager
def private_bus(directory: Path) -> Iterator[str]:
    """A dbus-daemon of its own for the test; yields its address; killed by PID at the end."""
    binary = shutil.which("dbus-daemon")
    if binary is None:
        raise RuntimeError("dbus-daemon is not installed (apt-get install dbus)")
    directory.mkdir(parents=True, exist_ok=True)
    socket_path = directory / "bus"
    config = directory / "bus.conf"
    config.write_text(BUS_CONFIG.format(path=socket_path))
    proc = subprocess.Popen([binary, f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().decode().strip()  # printed once it listens
        if not address:
            raise RuntimeError(f"dbus-daemon did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
        yield address
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


class LogindStandIn:
    """Owns org.freedesktop.login1 on ``address`` and serves the sessions it is given, in a thread."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._lock = threading.Lock()
        self._sessions: dict[str, FakeSession] = {}
        self._stop = threading.Event()
        self._conn: DBusConnection | None = None
        self._thread: threading.Thread | None = None
        #: Method calls served, e.g. ("ListSessions", ""), for tests that check what was asked.
        self.calls: list[tuple[str, str]] = []

    # --- what the test does -------------------------------------------------------------

    def set_sessions(self, *sessions: FakeSession) -> None:
        with self._lock:
            self._sessions = {s.session_id: s for s in sessions}

    def activate(self, session_id: str) -> None:
        """Fast user switching: ``session_id`` becomes the active session of its seat, the others on it not."""
        with self._lock:
            seat = self._sessions[session_id].seat
            for sid, session in self._sessions.items():
                if session.seat == seat:
                    self._sessions[sid] = replace(session, active=sid == session_id)

    def lock(self, session_id: str, locked: bool = True) -> None:
        with self._lock:
            self._sessions[session_id] = replace(self._sessions[session_id], locked=locked)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> LogindStandIn:
        conn = open_dbus_connection(self.address)
        reply = conn.send_and_get_reply(message_bus.RequestName(LOGIND, 4), timeout=5)  # DO_NOT_QUEUE
        if reply.body[0] != 1:
            raise RuntimeError(f"could not own {LOGIND} on the test bus: {reply.body}")
        self._conn = conn
        self._thread = threading.Thread(target=self._serve, name="logind-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._conn is not None:
            self._conn.close()

    def _serve(self) -> None:
        assert self._conn is not None
        while not self._stop.is_set():
            try:
                message = self._conn.receive(timeout=0.2)
            except TimeoutError:
                continue
            except (OSError, ValueError):
                return
            if message.header.message_type != MessageType.method_call:
                continue
            try:
                reply = self._answer(message)
            except KeyError as exc:
                reply = new_error(message, "org.freedesktop.login1.NoSuchSession", "s", (f"no session {exc}",))
            with contextlib.suppress(OSError):
                self._conn.send(reply)

    # --- logind's answers ---------------------------------------------------------------

    def _answer(self, message: Any) -> Any:
        fields = message.header.fields
        member = fields.get(HeaderFields.member, "")
        interface = fields.get(HeaderFields.interface, "")
        path = fields.get(HeaderFields.path, "")
        with self._lock:
            sessions = dict(self._sessions)
        self.calls.append((member, path))
        if path == ROOT and member == "ListSessions":
            rows = [(s.session_id, s.uid, s.user, s.seat, object_path(s.session_id)) for s in sessions.values()]
            return new_method_return(message, "a(susso)", (rows,))
        if path == ROOT and member == "GetSession":
            return new_method_return(message, "o", (object_path(sessions[message.body[0]].session_id),))
        if path.startswith(SESSION_PREFIX) and interface == "org.freedesktop.DBus.Properties":
            by_path = {object_path(s.session_id): s for s in sessions.values()}
            props = _properties(by_path[path])
            if member == "GetAll":
                return new_method_return(message, "a{sv}", (props,))
            if member == "Get":
                return new_method_return(message, "v", (props[message.body[1]],))
        return new_error(message, "org.freedesktop.DBus.Error.UnknownMethod", "s", (f"{interface}.{member}",))


def _properties(s: FakeSession) -> dict[str, tuple[str, Any]]:
    return {
        "Id": ("s", s.session_id),
        "User": ("(uo)", (s.uid, f"{ROOT}/user/_{s.uid}")),
        "Name": ("s", s.user),
        "Seat": ("(so)", (s.seat, f"{ROOT}/seat/{s.seat}" if s.seat else "/")),
        "Display": ("s", s.display),
        "Remote": ("b", s.remote),
        "Type": ("s", s.type),
        "Class": ("s", s.klass),
        "Active": ("b", s.active),
        "LockedHint": ("b", s.locked),
        "State": ("s", "active" if s.active else "online"),
        "TTY": ("s", ""),
        "VTNr": ("u", 0),
    }


def user_env(home: str, user: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for a process run as ``user`` (no root's variables carried over)."""
    env = {"HOME": home, "USER": user, "LOGNAME": user, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    for name in ("TZ",):
        if name in os.environ:
            env[name] = os.environ[name]
    return {**env, **(extra or {})}
