"""A node's bus certificate lives no longer than a hand-made intermediate (issue 20), renews for the same key,
and is warned about like the intermediate.

Real ``helpline certs nats`` processes on real files and certificates; the warning through ``issuer.load`` and
``issuer.watch`` with an injected ``now`` (as tests/test_certs_nodes.py does for the intermediate).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from certs.nats import BusPaths, spki_pin, write_bus
from certs.pki import CLOCK_SKEW, CertificateAuthority, load_certificate
from server import issuer
from server.config import ServerConfig
from tests.harness import server_config
from tests.procs import helpline


def _bus(tmp_path: Path, *extra: str) -> BusPaths:
    helpline("certs", "nats", "--dir", str(tmp_path / "bus"), "--server-name", "nats.internal",
             "--node", "node-a", "--node", "node-b", *extra)
    return BusPaths(tmp_path / "bus")


def _lifetime(path: Path) -> timedelta:
    cert = load_certificate(path)
    return cert.not_valid_after_utc - cert.not_valid_before_utc - CLOCK_SKEW


def test_node_certificates_default_to_60_days_and_more_than_90_is_refused(tmp_path: Path) -> None:
    """Nodes get 60 days by default, the NATS server and the bucket administrator a year; --days 91 is refused
    with a message naming the limit, and writes nothing."""
    paths = _bus(tmp_path)
    assert _lifetime(paths.node_pem("node-a")) == timedelta(days=60)
    assert _lifetime(paths.server_pem) == timedelta(days=365)
    assert _lifetime(paths.admin_pem) == timedelta(days=365)
    assert _lifetime(_bus(tmp_path / "b", "--days", "90").node_pem("node-b")) == timedelta(days=90)
    refused = helpline("certs", "nats", "--dir", str(tmp_path / "c"), "--server-name", "nats.internal",
                       "--node", "node-a", "--days", "91", check=False)
    assert refused.returncode == 1
    assert "--days: a node's bus certificate lives 1 to 90 days" in refused.stderr
    assert not (tmp_path / "c").exists()


def test_renew_keeps_the_key_and_the_pin_and_touches_nothing_else(tmp_path: Path) -> None:
    """--renew re-certifies node-a's key for --days: same SPKI pin, config and key files unchanged, a new
    notAfter; node-b is not touched; the output says what to copy where."""
    paths = _bus(tmp_path)
    before = load_certificate(paths.node_pem("node-a"))
    untouched = {p: p.read_bytes() for p in (paths.config, paths.node_key("node-a"), paths.node_pem("node-b"),
                                             paths.server_pem, paths.server_key, paths.admin_pem)}
    out = helpline("certs", "nats", "--dir", str(paths.directory), "--renew", "--node", "node-a",
                   "--days", "30").stdout
    after = load_certificate(paths.node_pem("node-a"))
    assert spki_pin(after) == spki_pin(before) and spki_pin(after) in paths.config.read_text()
    assert after.serial_number != before.serial_number
    assert after.not_valid_after_utc != before.not_valid_after_utc
    assert _lifetime(paths.node_pem("node-a")) == timedelta(days=30)
    assert after.subject == before.subject
    assert {p: p.read_bytes() for p in untouched} == untouched
    assert f"copy {paths.node_pem('node-a')} to its nats_tls_cert" in out and "restart" in out


def test_renew_refuses_an_unknown_node_and_too_long_a_lifetime(tmp_path: Path) -> None:
    """A node 'certs nats' never made is refused before anything is written (node-a named with it keeps its
    certificate); --renew --days 91 is refused too."""
    paths = _bus(tmp_path)
    before = paths.node_pem("node-a").read_bytes()
    refused = helpline("certs", "nats", "--dir", str(paths.directory), "--renew", "--node", "node-a",
                       "--node", "ghost", check=False)
    assert refused.returncode == 1 and "unknown node 'ghost'" in refused.stderr
    assert not paths.node_pem("ghost").exists() and paths.node_pem("node-a").read_bytes() == before
    refused = helpline("certs", "nats", "--dir", str(paths.directory), "--renew", "--node", "node-a",
                       "--days", "91", check=False)
    assert refused.returncode == 1 and "1 to 90 days" in refused.stderr
    assert paths.node_pem("node-a").read_bytes() == before


def _node_with_bus(tmp_path: Path) -> tuple[ServerConfig, datetime]:
    """A node whose bus certificate (60 days) was made 30 days before its intermediate (60 days): the bus
    certificate is due from 10 days into the intermediate's life, expired at 30, while the intermediate is fine."""
    config = server_config(tmp_path / "srv")
    start = CertificateAuthority.load(config.pki_path).certificate.not_valid_before_utc
    paths = write_bus(tmp_path / "bus", ["node-a"], ["nats.internal"], now=start - timedelta(days=30),
                      listen="127.0.0.1:4222", store_dir=tmp_path / "js")
    return replace(config, node_id="node-a", nats_tls_cert=paths.node_pem("node-a")), start


def test_the_bus_certificate_warning_at_two_thirds_and_error_once_expired(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """issuer.load (the server's start) is silent early on, warns from two-thirds of the bus certificate's life
    naming the renew command, and logs an error once it has expired; the intermediate says nothing meanwhile."""
    config, start = _node_with_bus(tmp_path)
    assert config.nats_tls_cert is not None
    end = load_certificate(config.nats_tls_cert).not_valid_after_utc
    with caplog.at_level(logging.WARNING, logger="server.issuer"):
        issuer.load(config, now=start + timedelta(days=1))
        assert not caplog.records
        issuer.load(config, now=start + timedelta(days=11))
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert "helpline certs nats --dir NATS_BUS_DIR --renew --node node-a" in caplog.text
        assert str(config.nats_tls_cert) in caplog.text and end.isoformat() in caplog.text
        caplog.clear()
        issuer.load(config, now=start + timedelta(days=31))
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "expired" in caplog.text and "--renew --node node-a" in caplog.text
    assert "intermediate" not in caplog.text


async def test_the_running_server_repeats_the_bus_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """issuer.watch, the loop that repeats the intermediate's warning, repeats the bus certificate's too."""
    config, start = _node_with_bus(tmp_path)
    ca = CertificateAuthority.load(config.pki_path)
    bus = issuer.watched_bus_certificate(config)
    assert bus == config.nats_tls_cert
    with caplog.at_level(logging.WARNING, logger="server.issuer"):
        task = asyncio.create_task(issuer.watch(lambda: ca, lambda: start + timedelta(days=11), 0.01, bus=bus))
        try:
            deadline = asyncio.get_running_loop().time() + 30
            while len(caplog.records) < 2:
                assert asyncio.get_running_loop().time() < deadline, "no repeated bus certificate warning"
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
    assert all("--renew --node node-a" in r.getMessage() for r in caplog.records)
    assert issuer.watched_bus_certificate(replace(config, nats_tls_cert=None)) is None


def test_status_shows_the_bus_certificate(tmp_path: Path) -> None:
    """helpline certs status --bus-cert adds the bus certificate's row with its expiry."""
    config = server_config(tmp_path / "srv")
    paths = _bus(tmp_path)
    out = helpline("certs", "status", "--dir", str(config.pki_path), "--bus-cert",
                   str(paths.node_pem("node-a"))).stdout
    end = load_certificate(paths.node_pem("node-a")).not_valid_after_utc
    row = next(line for line in out.splitlines() if line.startswith("bus "))
    assert f"until {end:%Y-%m-%d %H:%M} UTC" in row and "CN=node-a" in row and " ok " in row
