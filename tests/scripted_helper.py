"""A session helper that says a chosen hello and then only listens (tests; run as the session's user).

The real helper decides its screen backend and view-only from the desktop it runs on; a ScreenCast-only
portal reachable by a second Unix user is more than these tests need to build, so this stand-in says
``screen_backend``/``view_only`` as told, over the real socket (the service checks its kernel credentials
and logind session as for any helper). It prints ``welcomed`` once accepted and runs until the service
closes the connection or it is terminated.

Usage: ``python -m tests.scripted_helper SOCKET SESSION_ID DISPLAY BACKEND VIEW_ONLY(0|1)``
"""

from __future__ import annotations

import socket
import sys

from protocol.desktop import DesktopConnection, Hello, Refused, Welcome


def main(argv: list[str]) -> int:
    path, session_id, display, backend, view_only = argv
    conn = DesktopConnection("helper")
    conn.send(Hello(session_id=session_id, display=display, screen_backend=backend,  # type: ignore[arg-type]
                    view_only=view_only == "1"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        for chunk in conn.data_to_send():
            sock.sendall(chunk)
        while data := sock.recv(65536):
            conn.receive_data(data)
            for event in conn.events_received():
                if isinstance(event, Welcome):
                    print("welcomed", flush=True)
                elif isinstance(event, Refused):
                    print(f"refused: {event.reason}", flush=True)
                    return 2
            if conn.error is not None:
                print(f"protocol error: {conn.error}", flush=True)
                return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
