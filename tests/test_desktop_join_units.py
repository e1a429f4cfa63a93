"""Join and hand-off on the local socket (issue 16), pure: the new fields travel, their limits hold, and a helper
cannot send what only the service may."""

from __future__ import annotations

import msgspec
import pytest

from protocol.desktop import (
    DesktopConnection,
    IndicatorPeople,
    IndicatorPeopleShown,
    IndicatorShow,
    PromptAnswer,
    PromptShow,
    encode_frame,
)
from protocol.errors import InvalidMessage, LocalProtocolError
from protocol.session import MAX_PEOPLE


def _received(role: str, data: bytes) -> DesktopConnection:
    conn = DesktopConnection(role)  # type: ignore[arg-type]
    conn.receive_data(data)
    return conn


def test_join_prompt_colleagues_answer_and_people_round_trip() -> None:
    """The join flag, the colleagues offer and tick, and the people list arrive as sent."""
    service, helper = DesktopConnection("service"), DesktopConnection("helper")
    service.send(PromptShow(request_id="p-1", technician="tia", mode="view", timeout_s=30, join=True))
    service.send(PromptShow(request_id="p-2", technician="ann", mode="control", timeout_s=30, colleagues_option=True))
    service.send(IndicatorShow(indicator_id="i-1", technician="ann", mode="view", viewers=["ann"], controller="ann"))
    service.send(IndicatorPeople(indicator_id="i-1", viewers=["ann", "tia"], controller=None))
    received = _received("helper", b"".join(service.data_to_send())).events_received()
    assert [type(m) for m in received] == [PromptShow, PromptShow, IndicatorShow, IndicatorPeople]
    join, first, shown, people = received
    assert isinstance(join, PromptShow) and join.join and not join.colleagues_option
    assert isinstance(first, PromptShow) and first.colleagues_option and not first.join
    assert isinstance(shown, IndicatorShow) and shown.viewers == ["ann"] and shown.controller == "ann"
    assert isinstance(people, IndicatorPeople) and people.viewers == ["ann", "tia"] and people.controller is None

    helper.send(PromptAnswer(request_id="p-2", allowed=True, by="user", colleagues=True))
    helper.send(IndicatorPeopleShown(indicator_id="i-1", shown="Watching: ann, tia \u2014 nobody controls"))
    answer, confirmed = _received("service", b"".join(helper.data_to_send())).events_received()
    assert isinstance(answer, PromptAnswer) and answer.colleagues
    assert isinstance(confirmed, IndicatorPeopleShown) and confirmed.shown.startswith("Watching: ann, tia")


def test_people_lists_are_bounded_and_one_way() -> None:
    """More than MAX_PEOPLE names, or an over-long people line, is refused on receipt; a helper cannot send
    IndicatorPeople and the service cannot send IndicatorPeopleShown."""
    crowd = msgspec.msgpack.encode({"t": "indicator.people", "indicator_id": "i-1",
                                    "viewers": [f"t{n}" for n in range(MAX_PEOPLE + 1)]})
    conn = _received("helper", len(crowd).to_bytes(4, "big") + crowd)
    assert isinstance(conn.error, InvalidMessage) and conn.events_received() == []
    long_line = msgspec.msgpack.encode({"t": "indicator.people_shown", "indicator_id": "i-1", "shown": "x" * 1001})
    conn = _received("service", len(long_line).to_bytes(4, "big") + long_line)
    assert isinstance(conn.error, InvalidMessage)
    # Each side decodes only the other side's messages: a people update from a helper is not a helper message.
    conn = _received("service", encode_frame(IndicatorPeople(indicator_id="i-1", viewers=["x"])))
    assert isinstance(conn.error, InvalidMessage)
    with pytest.raises(LocalProtocolError):
        DesktopConnection("helper").send(IndicatorPeople(indicator_id="i-1"))
    with pytest.raises(LocalProtocolError):
        DesktopConnection("service").send(IndicatorPeopleShown(indicator_id="i-1"))
