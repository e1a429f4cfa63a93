"""The control-channel codec: round trips, strict validation, documented errors only."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec, limits
from protocol.errors import (
    InvalidMessage,
    MalformedMessage,
    MessageTooLarge,
    RemoteProtocolError,
    UnknownMessageType,
    UnsupportedVersion,
)
from protocol.messages import (
    Ack,
    CertRenewRequest,
    Error,
    HealthBatch,
    HealthGap,
    HealthSample,
    Hello,
    InventoryReport,
    Ping,
    Welcome,
)
from protocol.version import negotiate

ids = st.text(alphabet="abcdef0123456789-", min_size=1, max_size=limits.MAX_ID_LEN)
short = st.text(max_size=limits.MAX_SHORT_STR)
checksum = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
section = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=32)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=40)

messages = st.one_of(
    st.builds(Hello, id=ids, min_version=st.integers(0, 5), max_version=st.integers(0, 5),
              agent_version=short, device_id=ids, capabilities=st.lists(short, max_size=5)),
    st.builds(Welcome, id=ids, version=st.integers(0, 5), server_version=short,
              keepalive_s=st.floats(0.5, 3600), cert_renew_due=st.booleans()),
    st.builds(Ping, id=ids),
    st.builds(Ack, id=ids, in_reply_to=ids),
    st.builds(Error, id=ids, code=short, message=short, in_reply_to=st.none() | ids),
    st.builds(CertRenewRequest, id=ids, csr=st.text(min_size=1, max_size=200)),
    st.builds(InventoryReport, id=ids, full=st.booleans(),
              sections=st.dictionaries(section, st.dictionaries(st.text(max_size=10), json_scalars), max_size=5),
              checksums=st.dictionaries(section, checksum, max_size=5)),
    st.builds(HealthBatch, id=ids,
              samples=st.lists(st.builds(HealthSample, seq=st.integers(0, 2**40), ts=st.floats(0, 2e9),
                                         metrics=st.dictionaries(st.text(max_size=10), json_scalars, max_size=4)),
                               max_size=5),
              gaps=st.lists(st.builds(HealthGap, from_seq=st.integers(0, 100), to_seq=st.integers(0, 100),
                                      dropped=st.integers(0, 100)), max_size=2)),
)


@given(messages)
def test_round_trip(message: object) -> None:
    """decode(encode(m)) == m for every generated message."""
    assert codec.decode(codec.encode(message)) == message  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    """Random bytes never raise anything outside the documented family."""
    try:
        codec.decode(data)
    except RemoteProtocolError:
        pass


json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["type", "v", "id", "device_id", "min_version", "samples", "csr", "x"]),
                       json_values, max_size=6))
def test_arbitrary_json_objects_raise_only_protocol_errors(obj: dict[str, object]) -> None:
    """Random JSON objects (with plausible keys) never raise outside the documented family."""
    for type_name in ("hello", "health.batch", "inventory", "cert.renew.request", obj.get("type")):
        candidate = dict(obj, type=type_name)
        try:
            codec.decode(json.dumps(candidate))
        except RemoteProtocolError:
            pass


def test_oversized_message_is_refused_before_parsing() -> None:
    """A frame over the limit raises MessageTooLarge (code too_large)."""
    with pytest.raises(MessageTooLarge) as info:
        codec.decode("x" * 101, max_bytes=100)
    assert info.value.code == "too_large"


@pytest.mark.parametrize(
    ("frame", "error", "reply_to"),
    [
        ("not json", MalformedMessage, None),
        ('{"type": "bogus", "id": "m1"}', UnknownMessageType, "m1"),
        ('{"type": "ping", "id": "m2", "v": 9}', UnsupportedVersion, "m2"),
        ('{"type": "hello", "id": "m3", "min_version": "1"}', InvalidMessage, "m3"),
        ('{"type": "ping", "id": "m4", "surprise": 1}', InvalidMessage, "m4"),
        ('{"type": "hello", "id": "m5", "min_version": 1, "max_version": 1, "agent_version": "1",'
         ' "device_id": "' + "d" * 65 + '"}', InvalidMessage, "m5"),
        ('[1, 2]', InvalidMessage, None),
    ],
)
def test_bad_frames_map_to_codes(frame: str, error: type[Exception], reply_to: str | None) -> None:
    """Each kind of bad frame raises its own error and names the message it replies to."""
    with pytest.raises(error) as info:
        codec.decode(frame)
    assert getattr(info.value, "in_reply_to", None) == reply_to


def test_wire_envelope_shape() -> None:
    """Frames carry v, type and id at the top level."""
    frame = json.loads(codec.encode(Ping(id="abc")))
    assert frame == {"v": 1, "type": "ping", "id": "abc"}


def test_health_batch_limit() -> None:
    """More samples than MAX_HEALTH_BATCH in one batch is invalid."""
    samples = [{"seq": i, "ts": 1.0, "metrics": {}} for i in range(limits.MAX_HEALTH_BATCH + 1)]
    with pytest.raises(InvalidMessage):
        codec.decode(json.dumps({"type": "health.batch", "id": "b", "samples": samples}))


@pytest.mark.parametrize(("peer", "expected"), [((1, 1), 1), ((0, 3), 1), ((1, 7), 1)])
def test_negotiate_picks_highest_common(peer: tuple[int, int], expected: int) -> None:
    """Negotiation returns the highest version both speak."""
    assert negotiate(*peer) == expected


@pytest.mark.parametrize("peer", [(2, 3), (0, 0), (3, 1)])
def test_negotiate_without_common_version(peer: tuple[int, int]) -> None:
    """No overlap raises UnsupportedVersion with a message naming both ranges."""
    with pytest.raises(UnsupportedVersion, match="no common protocol version"):
        negotiate(*peer)
