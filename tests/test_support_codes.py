"""Support codes without a network: the guessing bound from the configured values, the config the
server refuses, code values and their HMAC, the client's bundle."""

from __future__ import annotations

import math
import stat
from pathlib import Path

import pytest

from agent.support_client.bundle import BundleError, parse_bundle
from common.config import ConfigError
from server.app import HelplineServer
from server.config import ServerConfig, load_sections
from server.support_codes import codes
from server.support_codes.settings import (
    MAX_GUESS_PROBABILITY,
    SupportCodeSettings,
    guess_bound,
    guesses_per_life,
)
from tests.harness import server_config
from tests.procs import helpline

PIN = "ab" * 32


def _bound_by_hand(s: SupportCodeSettings) -> float:
    """The README's arithmetic, written out again from the settings' fields."""
    windows = math.ceil(s.max_ttl_min * 60 / s.window_s) + 1  # windows a code's life can touch
    guesses = s.global_per_window * windows * s.nodes  # every attempt is one guess, counted globally per node
    return float(guesses * s.max_live / 10 ** s.digits)  # union bound over the live codes


def test_configured_values_keep_guessing_below_one_in_a_million() -> None:
    """The server's configured support-code settings give P(a guess hits a live code during its life) < 1e-6."""
    configured = ServerConfig().support_codes
    assert guesses_per_life(configured) == 60 * 31
    assert guess_bound(configured) == pytest.approx(_bound_by_hand(configured))
    assert guess_bound(configured) == pytest.approx(1.86e-7)
    assert _bound_by_hand(configured) < MAX_GUESS_PROBABILITY
    configured.check()


@pytest.mark.parametrize("weak", [
    {"digits": 9},                                  # 1860 x 100 / 1e9 = 1.9e-4
    {"max_live": 1000},                             # 1.86e-6
    {"global_per_window": 600},                     # 1.8e-6
    {"nodes": 6},                                   # 1.1e-6
    {"window_s": 5.0},                              # 60 x 361 x 100 / 1e12 = 2.2e-6
])
def test_a_config_that_allows_guessing_is_refused(weak: dict[str, float]) -> None:
    """Any setting that lifts the bound to 1e-6 or more raises ConfigError naming the arithmetic."""
    with pytest.raises(ConfigError, match=r"not below 1e-06"):
        SupportCodeSettings.from_config(weak)
    assert _bound_by_hand(SupportCodeSettings(**weak)) >= MAX_GUESS_PROBABILITY  # type: ignore[arg-type]


def test_out_of_range_values_are_refused() -> None:
    """A life over 30 minutes, unknown keys and non-numbers are configuration errors."""
    for table in ({"max_ttl_min": 31}, {"default_ttl_min": 20, "max_ttl_min": 15}, {"colour": 1}, {"digits": "x"}):
        with pytest.raises(ConfigError):
            SupportCodeSettings.from_config(table)


def test_server_refuses_to_start_with_a_weak_config(tmp_path: Path) -> None:
    """Built in-process or run as ``helpline server --config``, a weak [support_codes] table stops the server."""
    with pytest.raises(ConfigError, match="support_codes"):
        HelplineServer(server_config(tmp_path / "a", support_codes=SupportCodeSettings(digits=9)))
    toml = tmp_path / "server.toml"
    toml.write_text("[server]\nconsole_port = 0\nagent_port = 0\n\n[support_codes]\nmax_live = 5000\n")
    assert load_sections(ServerConfig(), toml).support_codes.max_live == 5000
    data = server_config(tmp_path / "b").data_dir
    result = helpline("server", "--config", str(toml), "--data", str(data), check=False, timeout=60)
    assert result.returncode != 0
    assert "support_codes" in result.stderr and "not below 1e-06" in result.stderr


def test_codes_are_uniform_digits_grouped_for_reading_and_stored_as_a_peppered_hmac(tmp_path: Path) -> None:
    """12 digits (leading zeros kept), read in threes; spaces and dashes ignored; only the HMAC is kept."""
    drawn = {codes.new_code(12) for _ in range(200)}
    assert all(len(c) == 12 and c.isdigit() for c in drawn) and len(drawn) == 200
    assert codes.grouped("012345678901") == "012 345 678 901"
    assert codes.normalized("012 345-678\t901") == "012345678901"
    pepper = codes.load_pepper(tmp_path)
    assert stat.S_IMODE((tmp_path / codes.PEPPER_FILE).stat().st_mode) == 0o600
    assert codes.load_pepper(tmp_path) == pepper
    digest = codes.code_hash(pepper, "012345678901")
    assert len(digest) == 64 and "012345678901" not in digest
    assert digest != codes.code_hash(b"x" * 32, "012345678901")


def test_bundle_names_an_https_server_and_a_sha256_pin() -> None:
    """The bundle is two keys; anything else (http, a path, a short pin, extra keys) is refused."""
    bundle = parse_bundle(f'server = "https://help.example.org:8444"\nca_sha256 = "{PIN.upper()}"\n')
    assert bundle.ca_sha256 == PIN and bundle.wss("/x") == "wss://help.example.org:8444/x"
    assert bundle.origin == "https://help.example.org:8444"
    for bad in (f'server = "http://h:1"\nca_sha256 = "{PIN}"', f'server = "https://h:1/p"\nca_sha256 = "{PIN}"',
                'server = "https://h:1"\nca_sha256 = "abcd"', f'server = "https://h"\nca_sha256 = "{PIN}"\nx = 1',
                "not toml ="):
        with pytest.raises(BundleError):
            parse_bundle(bad)
