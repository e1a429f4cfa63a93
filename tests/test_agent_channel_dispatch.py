"""server/agent_channel._dispatch when the control channel closes under a handler (sans network: a real
ControlChannel, a stub connection around it)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from protocol import codec
from protocol.control import ChannelState, CloseCode, ControlChannel
from protocol.messages import Error, Ping, Pong
from server.agent_channel import AgentHandlers, _dispatch


class StubConnection:
    """What _dispatch and a handler use of an AgentConnection: the channel, the device id, send, reply_error."""

    def __init__(self) -> None:
        self.channel = ControlChannel("server", now=0.0, keepalive_s=30)
        self.channel.state = ChannelState.READY
        self.device_id = "dev-1"

    async def send(self, message: object) -> None:
        self.channel.send(message, 0.0)  # type: ignore[arg-type]  # raises on a closed channel, as the real one

    async def reply_error(self, code: str, message: str, in_reply_to: str | None) -> None:
        await self.send(Error(code=code, message=message, in_reply_to=in_reply_to))


def _server(handler: object) -> SimpleNamespace:
    handlers = AgentHandlers()
    handlers.register(Ping, handler)  # type: ignore[arg-type]
    return SimpleNamespace(agent_handlers=handlers)


async def test_an_answer_the_closed_channel_cannot_take_is_noted_not_logged_as_a_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    """A handler whose reply meets a channel closed meanwhile (a reconnect superseded it): an info line, no ERROR,
    nothing raised out of the dispatch (it used to log "handler failed" and then fail again on its own error
    reply, which the websocket middleware logged a second time)."""
    conn = StubConnection()

    async def handler(c: StubConnection, message: Ping) -> None:
        c.channel.close(CloseCode.GOING_AWAY, "superseded")  # the new connection took over meanwhile
        await c.send(Pong(in_reply_to=message.id))

    with caplog.at_level(logging.INFO, logger="server.agent_channel"):
        await _dispatch(_server(handler), conn, Ping())  # type: ignore[arg-type]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("answer not sent" in r.getMessage() for r in caplog.records)


async def test_a_handler_that_fails_on_an_open_channel_is_logged_and_answered_internal(
        caplog: pytest.LogCaptureFixture) -> None:
    conn = StubConnection()

    async def handler(_c: StubConnection, _message: Ping) -> None:
        raise ValueError("a bug")

    with caplog.at_level(logging.INFO, logger="server.agent_channel"):
        await _dispatch(_server(handler), conn, Ping())  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == ["handler failed"]
    (sent,) = [codec.decode(frame) for frame in conn.channel.data_to_send()]
    assert isinstance(sent, Error) and sent.code == "internal"
