"""A server node on its intermediate: what it refuses to run on, its expiry warning, rotation, the CLI.

Real servers on loopback (tests/harness.py), real agents, real ``helpline`` processes.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.errors import IssuerExpiredError, RootKeyOnServerError
from certs.pki import (
    CertificateAuthority,
    PkiPaths,
    RootCA,
    build_csr,
    generate_device_key,
    init_pki,
    install_intermediate,
    load_certificate,
    load_certificates,
    validate_device_certificate,
    write_private_key,
)
from server import devices, issuer
from server.app import HelplineServer
from tests.harness import enroll_agent, running_agent, running_server, server_config, wait_until
from tests.procs import HELPLINE, helpline

PASSPHRASE = b"correct horse battery staple"


def _node_with_root(data: Path, *, now: datetime | None = None) -> Path:
    """A data directory whose pki/ is a node of a root kept (encrypted) in data/../root."""
    init_pki(data / "pki", ["localhost"], now=now, root_out=data.parent / "root", passphrase=PASSPHRASE)
    return data


def test_server_refuses_a_pki_directory_holding_the_root_key(tmp_path: Path) -> None:
    """The root's key in the server's PKI directory (any name) stops the server before it listens."""
    data = _node_with_root(tmp_path / "srv")
    shutil.copy(tmp_path / "root" / "ca.key", data / "pki" / "root-backup.key")
    with pytest.raises(RootKeyOnServerError, match="root-backup"):
        HelplineServer(server_config(data))


def test_old_layout_runs_only_when_allowed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A directory from before intermediates (the CA's key beside ca.pem) is refused, unless
    allow_root_key_on_server; then its CA issues directly, with a warning at start."""
    pki = tmp_path / "srv" / "pki"
    root = RootCA.create(now=datetime.now(UTC))
    pki.mkdir(parents=True)
    (pki / "ca.pem").write_bytes(root.certificate.public_bytes(serialization.Encoding.PEM))
    write_private_key(pki / "ca.key", root._key)
    with pytest.raises(RootKeyOnServerError, match="allow_root_key_on_server"):
        issuer.load(server_config(tmp_path / "srv"))
    with caplog.at_level(logging.WARNING):
        ca = issuer.load(server_config(tmp_path / "srv", allow_root_key_on_server=True))
    assert ca.is_root and "allow_root_key_on_server" in caplog.text


def test_expiry_warning_at_start_and_refusal_once_expired(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Loaded with an injected now: silent early on, a warning from two-thirds of the intermediate's life,
    and a refusal once it has expired; device certificates issued late are capped at its end."""
    config = server_config(_node_with_root(tmp_path / "srv"))
    ca = CertificateAuthority.load(config.pki_path)
    start = ca.certificate.not_valid_before_utc
    with caplog.at_level(logging.WARNING, logger="server.issuer"):
        issuer.load(config, now=start + timedelta(days=30))
        assert not caplog.records
        issuer.load(config, now=start + timedelta(days=41))
    assert len(caplog.records) == 1 and "rotate it" in caplog.text and ca.not_after.isoformat() in caplog.text
    with pytest.raises(IssuerExpiredError):
        issuer.load(config, now=ca.not_after)
    late = ca.sign_device_csr(build_csr(generate_device_key()), "dev-late", now=start + timedelta(days=50))
    assert late.not_valid_after_utc == ca.not_after


async def test_running_server_warns_when_its_intermediate_is_due(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A server started on an intermediate made 45 days ago (of 60) logs the rotation warning at start."""
    _node_with_root(tmp_path / "srv", now=datetime.now(UTC) - timedelta(days=45))
    with caplog.at_level(logging.WARNING, logger="server.issuer"):
        async with running_server(tmp_path / "srv"):
            pass
    assert "the issuing intermediate expires" in caplog.text


async def test_enrollment_hands_the_chain_and_rotation_renews_devices(tmp_path: Path) -> None:
    """The enrolled device stores its certificate with the node's intermediate. After a rotation (new
    intermediate of the same root, server restarted) the device still connects with its old chain, is told
    to renew at once, and renews from the new intermediate."""
    data = _node_with_root(tmp_path / "srv")
    async with running_server(data) as server:
        ports = {"agent_port": server.agent_port, "console_port": server.console_port}
        state = await enroll_agent(server, tmp_path / "agent")
        first = CertificateAuthority.load(data / "pki")
    chain = load_certificates(state.cert_path)
    assert len(chain) == 2 and chain[1] == first.certificate
    assert validate_device_certificate(chain[0], first.root, now=datetime.now(UTC), intermediates=chain[1:])

    now = datetime.now(UTC)
    rotated = RootCA.load(tmp_path / "root", PASSPHRASE).new_intermediate(["localhost"], now=now)
    install_intermediate(data / "pki", rotated, ["localhost"], now=now)
    async with running_server(data, **ports) as server, running_agent(state) as agent:
        await wait_until(lambda: agent.client.connections >= 2 and agent.client.ready.is_set(), timeout=20,
                         what="reconnect with the certificate the new intermediate issued")
        renewed = load_certificates(state.cert_path)
        assert renewed[1] == rotated.certificate and rotated.issued(renewed[0])
        assert renewed[0].not_valid_after_utc <= rotated.not_after
        row = await devices.get(server.db, state.device_id)
        assert row is not None and row["cert_serial"] == f"{renewed[0].serial_number:x}"


def test_certs_commands_root_intermediate_status(tmp_path: Path) -> None:
    """The offline flow with the real CLI: root (encrypted key), an intermediate per node, status, fingerprint;
    a wrong passphrase and a missing one are refused."""
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE.decode() + "\n")
    out = helpline("certs", "root", "--out", str(tmp_path / "root"), "--passphrase-file", str(passphrase)).stdout
    fingerprint = out.split("root fingerprint (sha256): ")[1].split()[0]
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "root" / "ca.key").read_bytes()
    for node in ("a", "b"):
        helpline("certs", "intermediate", "--root", str(tmp_path / "root"), "--out", str(tmp_path / node),
                 "--server-name", f"{node}.example.org", "--days", "30", "--passphrase-file", str(passphrase))
        assert sorted(p.name for p in (tmp_path / node).iterdir()) == sorted(
            p.name for p in PkiPaths.from_dir(tmp_path / node).files())
        assert helpline("certs", "fingerprint", "--dir", str(tmp_path / node)).stdout.strip() == fingerprint
    a, b = (load_certificate(tmp_path / n / "intermediate.pem") for n in ("a", "b"))
    assert a != b and a.issuer == b.issuer
    constraints = a.extensions.get_extension_for_class(x509.NameConstraints).value.permitted_subtrees or []
    assert "a.example.org" in [str(n.value) for n in constraints]
    status = helpline("certs", "status", "--dir", str(tmp_path / "a")).stdout
    lines = {line.split()[0]: line for line in status.splitlines()[:3]}
    assert "ok" in lines["root"] and "ok" in lines["intermediate"] and "(30 days)" in lines["intermediate"]
    assert "rotate from" in lines["server"] and fingerprint in status

    wrong = tmp_path / "wrong"
    wrong.write_text("not the right passphrase\n")
    refused = helpline("certs", "intermediate", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "c"),
                       "--passphrase-file", str(wrong), check=False)
    assert refused.returncode == 1 and "wrong passphrase" in refused.stderr
    too_long = helpline("certs", "intermediate", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "c"),
                        "--days", "365", "--passphrase-file", str(passphrase), check=False)
    assert too_long.returncode == 1 and "90 days" in too_long.stderr
    no_terminal = subprocess.run([*HELPLINE, "certs", "init", "--dir", str(tmp_path / "d")], capture_output=True,
                                 text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert no_terminal.returncode == 1 and "--passphrase-file" in no_terminal.stderr
    assert not (tmp_path / "d").exists()


def test_server_command_refuses_the_root_key_with_a_message(tmp_path: Path) -> None:
    """'helpline server' on a PKI directory holding the root's key exits 1 and says why, without a traceback."""
    data = _node_with_root(tmp_path / "srv")
    shutil.copy(tmp_path / "root" / "ca.key", data / "pki" / "ca.key")
    result = helpline("server", "--data", str(data), "--host", "127.0.0.1", "--agent-port", "0",
                      "--console-port", "0", check=False)
    assert result.returncode == 1, result.stderr
    assert "holds the root's private key" in result.stderr and "Traceback" not in result.stderr
