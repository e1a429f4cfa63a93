"""The caller's side of the local help protocol (blocking: the window and ``--send`` run it in threads).

Which socket: ``--socket``, else the session helper's (``$XDG_RUNTIME_DIR/helpline-help.sock``,
service mode), else the agent's own ``<state>/help.sock`` (direct mode).
"""

from __future__ import annotations

import itertools
import socket
import threading
from pathlib import Path

from . import helper_socket
from .local_socket import SOCKET_NAME
from .wire import MAX_LINE, AgentMessage, Failed, WireError, WireMessage, decode_reply, encode


class HelpUnavailable(ConnectionError):
    """No agent answers where ``helpline help`` looked."""


def find_socket(explicit: Path | None, state_dir: Path) -> Path:
    if explicit is not None:
        return explicit
    helper = helper_socket.default_path()
    if helper is not None and helper.exists():
        return helper
    return state_dir / SOCKET_NAME


class HelpClient:
    """One connection; :meth:`call` numbers calls, :meth:`read` returns the next reply or push."""

    def __init__(self, path: Path, timeout_s: float | None = 30.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(str(path))
        except OSError as exc:
            self._sock.close()
            raise HelpUnavailable(f"the Helpline agent does not answer at {path}: {exc.strerror or exc}") from exc
        self._file = self._sock.makefile("rb")
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def number(self) -> int:
        return next(self._numbers)

    def send(self, message: WireMessage) -> None:
        with self._lock:
            self._sock.sendall(encode(message))

    def read(self) -> AgentMessage:
        line = self._file.readline(MAX_LINE + 1)
        if not line:
            raise HelpUnavailable("the Helpline agent closed the connection")
        try:
            return decode_reply(line)
        except WireError as exc:
            raise HelpUnavailable(f"the agent's answer is not understood: {exc}") from exc

    def call(self, message: WireMessage) -> AgentMessage:
        """Send and wait for the reply with the same number (pushes in between are skipped; a refusal of the
        whole connection, number 0, is the answer too)."""
        self.send(message)
        number = getattr(message, "call", 0)
        while True:
            reply = self.read()
            if reply.call == number or (reply.call == 0 and isinstance(reply, Failed)):
                return reply

    def close(self) -> None:
        self._file.close()
        self._sock.close()
