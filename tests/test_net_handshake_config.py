"""The handshake admission limits (server/net/slots.py) come from ``[server]`` keys with ``HELPLINE_*``
overrides: what an operator sets reaches the listeners' slots, and a nonsensical value is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import load_config
from server.config import ServerConfig
from server.net.limits import ConnectionLimits


def test_defaults_are_32_slots_held_1_s() -> None:
    limits = ConnectionLimits.from_config(ServerConfig(), 65536)
    assert (limits.handshakes, limits.handshake_hold_s) == (32, 1.0)


def test_toml_keys_and_env_overrides_reach_the_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "server.toml"
    path.write_text("[server]\ntls_handshakes_in_flight = 64\ntls_handshake_hold_s = 0.5\n")
    limits = ConnectionLimits.from_config(load_config(ServerConfig, path, section="server"), 65536)
    assert (limits.handshakes, limits.handshake_hold_s) == (64, 0.5)
    monkeypatch.setenv("HELPLINE_TLS_HANDSHAKES_IN_FLIGHT", "8")
    monkeypatch.setenv("HELPLINE_TLS_HANDSHAKE_HOLD_S", "2.5")
    limits = ConnectionLimits.from_config(load_config(ServerConfig, path, section="server"), 65536)
    assert (limits.handshakes, limits.handshake_hold_s) == (8, 2.5)


@pytest.mark.parametrize(("key", "value"), [("tls_handshakes_in_flight", 0), ("tls_handshake_hold_s", 0.0)])
def test_no_slot_or_no_hold_is_refused(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=r"at least 1|handshake_hold_s"):
        ConnectionLimits.from_config(ServerConfig(**{key: value}), 65536)  # type: ignore[arg-type]
