"""Sans-I/O session lifecycle: transition table, deadlines, mode rules, message codec."""

from __future__ import annotations

import pytest

from protocol import codec
from protocol.errors import InvalidMessage, LocalProtocolError
from protocol.session import (
    TRANSITIONS,
    SessionAnswer,
    SessionEnd,
    SessionMachine,
    SessionMode,
    SessionOffer,
    SessionState,
)

TOKEN = "t" * 43


def machine(mode: str = "control") -> SessionMachine:
    return SessionMachine("s1", mode, created_at=0.0, consent_timeout_s=30.0)  # type: ignore[arg-type]


def test_happy_path_reaches_ended_with_reason() -> None:
    """requested → offered → consented → streaming → ended records every step and the reason."""
    m = machine()
    m.offer(1.0)
    m.answer(accepted=True, mode_granted="control", by="user", now=2.0)
    m.start(3.0)
    assert m.end("technician ended the session", "technician", 4.0)
    assert [s for _, s in m.history] == [SessionState.OFFERED, SessionState.CONSENTED, SessionState.STREAMING,
                                          SessionState.ENDED]
    assert m.end_reason == "technician ended the session" and m.ended_by == "technician"
    assert not m.end("again", "user", 5.0)


def test_denied_and_timed_out_answers() -> None:
    """A refusal by the user is DENIED; one by the clock is TIMED_OUT; neither can start streaming."""
    denied, timed = machine(), machine()
    denied.offer(0)
    denied.answer(accepted=False, mode_granted=None, by="user", now=1)
    timed.offer(0)
    timed.answer(accepted=False, mode_granted=None, by="timeout", now=1)
    assert denied.state is SessionState.DENIED and timed.state is SessionState.TIMED_OUT
    for m in (denied, timed):
        with pytest.raises(LocalProtocolError):
            m.start(2)


def test_offer_deadline_times_out() -> None:
    """An offer nobody answers times out at the deadline, not before."""
    m = machine()
    m.offer(10.0)
    deadline = m.next_deadline()
    assert deadline is not None and deadline >= 40.0
    assert not m.tick(deadline - 0.1)
    assert m.tick(deadline) and m.state is SessionState.TIMED_OUT


def test_consented_session_must_open_tunnel_before_token_expires() -> None:
    """A consented session whose tunnel never arrives ends when the token life is over."""
    m = machine()
    m.offer(0)
    m.answer(accepted=True, mode_granted="view", by="user", now=1)
    assert m.next_deadline() == 61.0
    assert m.tick(61.0) and m.state is SessionState.ENDED


def test_control_never_granted_on_view_request() -> None:
    """An answer granting control to a view request is refused."""
    m = machine("view")
    m.offer(0)
    with pytest.raises(LocalProtocolError):
        m.answer(accepted=True, mode_granted="control", by="user", now=1)
    assert m.state is SessionState.OFFERED


def test_mode_upgrade_needs_consent() -> None:
    """A requested upgrade stays pending until consented; a refusal keeps the old mode."""
    m = machine("view")
    m.offer(0)
    m.answer(accepted=True, mode_granted="view", by="user", now=1)
    m.start(2)
    m.request_mode("control", 3)
    assert m.mode == "view" and m.pending_mode == "control"
    m.mode_refused(4)
    assert m.mode == "view" and m.pending_mode is None
    m.request_mode("control", 5)
    m.mode_consented("control", 6)
    assert m.mode == "control"
    with pytest.raises(LocalProtocolError):
        m.mode_consented("control", 7)


def test_transition_table_refuses_everything_else() -> None:
    """Every (state, event) pair missing from the table is refused."""
    m = machine()
    with pytest.raises(LocalProtocolError):
        m.start(0)
    m.offer(0)
    with pytest.raises(LocalProtocolError):
        m.offer(0)
    assert (SessionState.ENDED, next(iter(TRANSITIONS))[1]) not in TRANSITIONS


def test_messages_round_trip_through_the_codec() -> None:
    """Every session message encodes and decodes to an equal value."""
    msgs = [
        SessionOffer(session_id="s1", technician="Ann", technician_user="ann", technician_role="technician",
                     mode="view", reason="printer", tunnel_token=TOKEN),
        SessionAnswer(session_id="s1", accepted=True, mode_granted="view", by="user"),
        SessionEnd(session_id="s1", reason="done", by="technician"),
        SessionMode(session_id="s1", mode="control"),
    ]
    for msg in msgs:
        assert codec.decode(codec.encode(msg)) == msg


def test_bad_offer_fields_are_invalid() -> None:
    """A bad mode or a short tunnel token is a RemoteProtocolError, not a crash."""
    good = codec.encode(SessionOffer(session_id="s1", technician="A", technician_user="a", technician_role="r",
                                     mode="view", tunnel_token=TOKEN))
    for bad in (good.replace('"view"', '"spy"'), good.replace(TOKEN, "short")):
        with pytest.raises(InvalidMessage):
            codec.decode(bad)
