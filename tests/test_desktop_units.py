"""The desktop split's pure parts: the local socket's codec, whom to ask, a helper's hello, dropped file names."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.desktop import downloads
from agent.desktop.broker import HelperRefused, check_hello
from agent.desktop.link import PeerCredentials
from agent.desktop.tracker import LoginSession, choose
from protocol.desktop import (
    LENGTH,
    MAX_FRAME_BYTES,
    DesktopConnection,
    FileDrop,
    Hello,
    PromptShow,
    ScreenFrame,
    Welcome,
    encode_frame,
)
from protocol.errors import LocalProtocolError, RemoteProtocolError


def _pair(role: str, data: bytes) -> DesktopConnection:
    conn = DesktopConnection(role)  # type: ignore[arg-type]
    conn.receive_data(data)
    return conn


def test_frames_split_anywhere_decode_the_same() -> None:
    """A frame fed one byte at a time arrives whole, once."""
    helper = DesktopConnection("helper")
    helper.send(Hello(session_id="c1", display=":0"))
    helper.send(ScreenFrame(stream_id="s-1", data=b"\x00" * 300))
    service = DesktopConnection("service")
    for chunk in helper.data_to_send():
        for i in range(len(chunk)):
            service.receive_data(chunk[i:i + 1])
    assert service.events_received() == [Hello(session_id="c1", display=":0"),
                                         ScreenFrame(stream_id="s-1", data=b"\x00" * 300)]
    assert service.error is None


def test_a_helper_cannot_send_what_only_the_service_may() -> None:
    """Direction is typed: a helper's 'prompt' or 'file.drop' is invalid on the service side, and cannot be sent."""
    for message in (PromptShow(request_id="p", technician="x", mode="control", timeout_s=5),
                    FileDrop(drop_id="d", name="a", data=b"x"), Welcome(session_id="c1")):
        conn = _pair("service", encode_frame(message))
        assert conn.events_received() == [] and conn.error is not None and conn.error.code == "invalid"
    with pytest.raises(LocalProtocolError):
        DesktopConnection("helper").send(Welcome(session_id="c1"))


def test_an_oversized_length_is_refused_before_buffering() -> None:
    """A length over the limit is an error at once: nothing is allocated for the promised body."""
    conn = _pair("service", LENGTH.pack(MAX_FRAME_BYTES + 1) + b"x" * 10)
    assert conn.error is not None and conn.error.code == "too_large"
    conn.receive_data(encode_frame(Hello(session_id="c1")))
    assert conn.events_received() == []  # nothing more after a violation


def test_hello_fields_are_validated() -> None:
    """A session id with a path in it, a display with spaces, a frame with both text and data: all refused."""
    for raw in ({"t": "hello", "session_id": "../c1"}, {"t": "hello", "session_id": "c1", "display": ":0 ; rm"},
                {"t": "screen.frame", "stream_id": "s", "text": "a", "data": b"b"}):
        body = msgspec.msgpack.encode(raw)
        conn = _pair("service", LENGTH.pack(len(body)) + body)
        assert conn.error is not None, raw


@given(st.binary(max_size=2048))
def test_garbage_never_raises(data: bytes) -> None:
    """Any bytes: events or a recorded remote error, never an exception."""
    for role in ("service", "helper"):
        conn = DesktopConnection(role)  # type: ignore[arg-type]
        conn.receive_data(data)
        conn.events_received()
        assert conn.error is None or isinstance(conn.error, RemoteProtocolError)


def _s(sid: str, uid: int = 1000, *, active: bool = False, locked: bool = False, seat: str = "seat0",
       type_: str = "x11", klass: str = "user", display: str = ":0") -> LoginSession:
    return LoginSession(sid, uid, f"u{uid}", seat=seat, type=type_, klass=klass, active=active, locked=locked,
                        display=display)


def test_choose_asks_only_the_active_unlocked_graphical_session() -> None:
    """Table: who is asked, or why nobody is."""
    assert choose([]).reason == "nobody is logged in to a graphical session"
    assert choose([_s("1", type_="tty", active=True)]).reason == "nobody is logged in to a graphical session"
    assert choose([_s("g", klass="greeter", active=True)]).session is None
    assert "no graphical session is active" in choose([_s("1"), _s("2", 1001)]).reason
    assert choose([_s("1", active=True, locked=True), _s("2", 1001)]).reason == "the active session (u1000) is locked"
    assert choose([_s("1"), _s("2", 1001, active=True)]).session == _s("2", 1001, active=True)
    other_seat = _s("3", 1002, active=True, seat="seat1")
    assert choose([other_seat, _s("2", 1001, active=True)]).session == _s("2", 1001, active=True)  # seat0 first
    assert choose([other_seat]).session == other_seat
    assert choose([_s("r", active=True, seat="")]).session is None  # remote/seatless: nobody sits there


def test_check_hello_binds_a_helper_to_its_own_uid() -> None:
    """The session must exist, be the peer's own (by SO_PEERCRED uid), graphical, not root's, on the claimed display."""
    sessions = [_s("c1", 1000, display=":5"), _s("c2", 1001, display=":6"), _s("t", 1000, type_="tty")]
    assert check_hello(Hello(session_id="c1", display=":5"), PeerCredentials(9, 1000, 1000), sessions) == sessions[0]
    refusals = {
        "belongs to uid 1000, not to the connecting uid 1001": (Hello(session_id="c1", display=":5"), 1001),
        "never runs as root": (Hello(session_id="c1", display=":5"), 0),
        "no session 'c9'": (Hello(session_id="c9", display=":5"), 1000),
        "not a graphical session": (Hello(session_id="t", display=":5"), 1000),
        "shows display :5, not :7": (Hello(session_id="c1", display=":7"), 1000),
    }
    for expected, (hello, uid) in refusals.items():
        with pytest.raises(HelperRefused, match=expected):
            check_hello(hello, PeerCredentials(9, uid, uid), sessions)


def test_dropped_file_names_stay_plain_and_never_overwrite(tmp_path: Path) -> None:
    """Only the last component survives, made plain; a second drop of the same name gets a new file."""
    assert downloads.plain_name("../../etc/passwd") == "passwd"
    assert downloads.plain_name("C:\\Users\\x\\report.pdf") == "report.pdf"
    assert downloads.plain_name(".bashrc") == "bashrc"
    assert downloads.plain_name("..") == downloads.FALLBACK
    assert downloads.plain_name("-rf $(x).sh") == "rf _(x).sh"
    first = downloads.save(tmp_path / "Downloads", "../notes.txt", b"one")
    second = downloads.save(tmp_path / "Downloads", "notes.txt", b"two")
    assert first.name == "notes.txt" and second.name == "notes (1).txt"
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"
    assert (tmp_path / "Downloads").stat().st_mode & 0o777 == 0o700 and first.stat().st_mode & 0o777 == 0o600


def test_a_helper_without_xdg_session_id_finds_its_own_session() -> None:
    """A systemd user unit has no XDG_SESSION_ID: the user's graphical session on its display, or its only one."""
    from agent.desktop.tracker import own_session

    sessions = [_s("c1", 1000, display=":5"), _s("c3", 1000, display=":7"), _s("c2", 1001, display=":6"),
                _s("t", 1002, type_="tty")]
    assert own_session(sessions, 1000, ":7") == sessions[1]
    assert own_session(sessions, 1000, ":9") is None  # two sessions, neither on :9: no guess
    assert own_session(sessions, 1001, "") == sessions[2]
    assert own_session(sessions, 1002, ":0") is None  # a text console is no desktop
