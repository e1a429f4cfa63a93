"""The sans-I/O control-channel state: handshake, keepalive, bad input — no network."""

from __future__ import annotations

import json

import pytest

from protocol import codec
from protocol.control import ChannelState, CloseCode, ControlChannel
from protocol.errors import LocalProtocolError
from protocol.messages import Ack, Hello, InventoryRequest, Ping, Welcome


class Pair:
    """Both ends wired in memory (h11's ConnectionPair idea)."""

    def __init__(self, now: float = 0.0) -> None:
        self.agent = ControlChannel("agent", now=now, keepalive_s=10)
        self.server = ControlChannel("server", now=now, keepalive_s=10)

    def flush(self, now: float) -> None:
        for _ in range(10):
            moved = False
            for src, dst in ((self.agent, self.server), (self.server, self.agent)):
                for frame in src.data_to_send():
                    dst.receive(frame, now)
                    moved = True
            if not moved:
                return

    def handshake(self, now: float = 0.0) -> None:
        self.agent.send(Hello(min_version=1, max_version=1, agent_version="t", device_id="dev1"), now)
        self.flush(now)
        (hello,) = self.server.events_received()
        assert isinstance(hello, Hello)
        self.server.send(Welcome(version=1, server_version="t", keepalive_s=10), now)
        self.flush(now)


def test_handshake_reaches_ready() -> None:
    """hello then welcome puts both ends in READY and surfaces the welcome to the agent."""
    pair = Pair()
    pair.handshake()
    assert pair.agent.state is ChannelState.READY and pair.server.state is ChannelState.READY
    assert isinstance(pair.agent.events_received()[0], Welcome)


def test_app_message_before_hello_is_unexpected_and_closes() -> None:
    """A server receiving anything but hello first answers 'unexpected' and closes."""
    server = ControlChannel("server", now=0)
    server.receive(codec.encode(Ack(in_reply_to="x")), 0)
    (frame,) = server.data_to_send()
    assert json.loads(frame)["code"] == "unexpected"
    assert server.close_request is not None and server.close_request.code is CloseCode.PROTOCOL


def test_agent_may_not_send_server_messages() -> None:
    """Sending a server-only message from the agent is a local error."""
    pair = Pair()
    pair.handshake()
    with pytest.raises(LocalProtocolError):
        pair.agent.send(InventoryRequest(reason="x"), 0)


def test_server_message_from_agent_is_refused() -> None:
    """An agent pretending to be the server gets an error reply, the channel stays up."""
    pair = Pair()
    pair.handshake()
    pair.server.receive(codec.encode(InventoryRequest(id="q1", reason="x")), 1)
    (frame,) = pair.server.data_to_send()
    reply = json.loads(frame)
    assert reply["type"] == "error" and reply["code"] == "unexpected" and reply["in_reply_to"] == "q1"
    assert pair.server.state is ChannelState.READY


def test_garbage_in_ready_gets_error_and_channel_survives() -> None:
    """Malformed frames are answered with errors; the channel keeps serving."""
    pair = Pair()
    pair.handshake()
    pair.server.receive("{nope", 1)
    pair.server.receive('{"type":"ping","id":"p1"}', 1)
    frames = [json.loads(f) for f in pair.server.data_to_send()]
    assert frames[0]["type"] == "error" and frames[0]["code"] == "malformed"
    assert frames[1] == {"v": 1, "type": "pong", "id": frames[1]["id"], "in_reply_to": "p1"}


def test_too_many_consecutive_errors_close_the_channel() -> None:
    """A peer sending only garbage is eventually closed with a policy code."""
    pair = Pair()
    pair.handshake()
    for _ in range(25):
        pair.server.receive("garbage", 1)
    assert pair.server.close_request is not None and pair.server.close_request.code is CloseCode.POLICY


def test_oversized_frame_closes_with_too_large() -> None:
    """An oversized frame closes with 1009, no parsing attempted."""
    server = ControlChannel("server", now=0, max_bytes=50)
    server.receive("x" * 51, 0)
    assert server.close_request is not None and server.close_request.code is CloseCode.TOO_LARGE


def test_keepalive_ping_then_timeout() -> None:
    """Idle for keepalive_s → ping; silent for 3×keepalive_s → close with TIMEOUT."""
    pair = Pair()
    pair.handshake(0)
    assert pair.agent.next_deadline() == 10
    pair.agent.tick(10)
    (frame,) = pair.agent.data_to_send()
    assert json.loads(frame)["type"] == "ping"
    pair.agent.tick(29)
    assert pair.agent.close_request is None
    pair.agent.tick(30)
    assert pair.agent.close_request is not None and pair.agent.close_request.code is CloseCode.TIMEOUT


def _types(frames: list[str]) -> list[str]:
    return [json.loads(frame)["type"] for frame in frames]


def test_the_server_sends_no_ping_while_the_agent_keeps_its_schedule() -> None:
    """The agent pings every keepalive; the server, whose backstop is 1.5 keepalives, only answers — however the
    delivery delays fall (the old rule, both pinging on one period, made the server ping whenever the agent's
    ping arrived later than its pong had left)."""
    pair = Pair()
    pair.handshake(0)
    pair.agent.events_received()
    server_sent: list[str] = []
    to_server: list[tuple[float, str]] = []
    to_agent: list[tuple[float, str]] = []
    step = 0
    while step * 0.25 <= 200:
        now = step * 0.25
        step += 1
        delay = 0.1 + (step * 7919 % 13) * 0.25  # 0.1–3.1 s each way, varying
        for channel, queue in ((pair.agent, to_server), (pair.server, to_agent)):
            channel.tick(now)
            frames = channel.data_to_send()
            if channel is pair.server:
                server_sent += frames
            queue += [(now + delay, frame) for frame in frames]
        for queue, channel in ((to_server, pair.server), (to_agent, pair.agent)):
            for due, frame in [item for item in queue if item[0] <= now]:
                channel.receive(frame, now)
            queue[:] = [item for item in queue if item[0] > now]
    assert pair.agent.close_request is None and pair.server.close_request is None
    assert "ping" not in _types(server_sent) and _types(server_sent).count("pong") >= 18, _types(server_sent)


def test_the_server_pings_as_a_backstop_and_closes_after_three_keepalives() -> None:
    """An agent that does not ping (an older one, or a dead path): the server pings after 1.5 keepalives of
    silence and closes after 3."""
    pair = Pair()
    pair.handshake(0)
    assert pair.server.next_deadline() == 15
    pair.server.tick(14.9)
    assert pair.server.data_to_send() == []
    pair.server.tick(15)
    assert _types(pair.server.data_to_send()) == ["ping"]
    pair.server.tick(29.9)
    assert pair.server.close_request is None
    pair.server.tick(30)
    assert pair.server.close_request is not None and pair.server.close_request.code is CloseCode.TIMEOUT


@pytest.mark.parametrize(("asked", "used"), [(30.0, 30.0), (0.5, 5.0), (3600.0, 120.0)])
def test_the_agent_keeps_the_welcomes_keepalive_within_bounds(asked: float, used: float) -> None:
    """The server chooses the fleet's keepalive in its welcome; the agent keeps it between 5 s and 120 s."""
    agent = ControlChannel("agent", now=0, keepalive_s=20)
    agent.send(Hello(min_version=1, max_version=1, agent_version="t", device_id="dev1"), 0)
    agent.receive(codec.encode(Welcome(version=1, server_version="t", keepalive_s=asked)), 0)
    assert agent.keepalive_s == used and agent.next_deadline() == used
    agent.tick(used)
    assert _types(agent.data_to_send())[-1] == "ping"


def test_pong_clears_outstanding_ping() -> None:
    """A pong answering our ping keeps the channel alive past the silence limit."""
    pair = Pair()
    pair.handshake(0)
    pair.agent.tick(10)
    pair.flush(11)
    pair.agent.tick(35)
    assert pair.agent.close_request is None


def test_reject_sends_error_and_closes() -> None:
    """Rejecting a hello sends an error frame and requests the given close code."""
    pair = Pair()
    pair.agent.send(Hello(min_version=1, max_version=1, agent_version="t", device_id="d"), 0)
    pair.flush(0)
    pair.server.reject(CloseCode.REVOKED, "device revoked", 0)
    (frame,) = pair.server.data_to_send()
    assert json.loads(frame)["code"] == "revoked"
    assert pair.server.close_request is not None and pair.server.close_request.code is CloseCode.REVOKED


def test_send_before_handshake_is_local_error() -> None:
    """The agent cannot send app messages before welcome."""
    agent = ControlChannel("agent", now=0)
    with pytest.raises(LocalProtocolError):
        agent.send(Ping(), 0)
