"""server/agent_channel._dispatch when the control channel closes under a handler (sans network: a real
ControlChannel, a stub connection around it)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from protocol import codec
from protocol.control import ChannelState, CloseCode, ControlChannel
from protocol.messages import Error, Hello, Ping, Pong
from server.agent_channel import AgentConnection, AgentHandlers, _dispatch
from server.store import Database


class StubConnection:
    """What _dispatch and a handler use of an AgentConnection: the channel, the device id, and the real
    AgentConnection.send and reply_error over them (the frames stay queued in the channel: no socket)."""

    send = AgentConnection.send
    reply_error = AgentConnection.reply_error

    def __init__(self) -> None:
        self.channel = ControlChannel("server", now=0.0, keepalive_s=30)
        self.channel.state = ChannelState.READY
        self.device_id = "dev-1"
        self.loop = asyncio.get_running_loop()

    async def flush(self) -> None:
        pass


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


async def test_a_hello_whose_connection_closed_meanwhile_is_not_answered_and_raises_nothing(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    """The device connected again while its first hello was being handled (the newer connection superseded this
    one): no welcome, no error out of the dispatch (the websocket middleware logged it as an error)."""
    conn = StubConnection()
    conn.channel.state = ChannelState.AWAIT_HELLO

    async def checksums(_device_id: str) -> dict[str, str]:
        conn.channel.close(CloseCode.SUPERSEDED, "a newer connection from this device replaced this one")
        return {}

    ready: list[object] = []
    server = SimpleNamespace(connections=SimpleNamespace(add=lambda _c: None), db=db, inventory_checksums=checksums,
                             agent_handlers=AgentHandlers(), config=SimpleNamespace(keepalive_s=30),
                             on_agent_ready=[lambda c: ready.append(c)])
    hello = Hello(min_version=1, max_version=1, agent_version="test", device_id=conn.device_id)
    with caplog.at_level(logging.INFO, logger="server.agent_channel"):
        await _dispatch(server, conn, hello)  # type: ignore[arg-type]
    assert conn.channel.data_to_send() == [] and ready == []
    assert any("hello not answered" in r.getMessage() for r in caplog.records)


async def test_a_message_the_channel_cannot_take_is_a_connection_gone_to_every_caller() -> None:
    """Callers that push to devices (tasks, tools, accounts, wake, authority, personal data) treat ConnectionError as
    "gone, served when it is back": a channel still in its handshake or closed raises one, not a protocol error."""
    conn = StubConnection()
    conn.channel.state = ChannelState.AWAIT_HELLO
    with pytest.raises(ConnectionError):
        await conn.send(Pong(in_reply_to="x"))
    await conn.send(Error(code="invalid", message="errors may go before the handshake"))
    conn.channel.close(CloseCode.GOING_AWAY, "bye")
    with pytest.raises(ConnectionError):
        await conn.send(Error(code="invalid", message="nor after the close"))
