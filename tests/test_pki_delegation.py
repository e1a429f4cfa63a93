"""A delegated node: the offline root delegates to a signer (a real ``helpline certs signer serve`` process),
which issues the node short-lived intermediates; the node renews without a restart.

The signer and the CLI run as real processes; the node is a real server in the test's loop (real TLS 1.3,
real agents), so the test can watch its issuing CA and its agents' connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509

from certs.errors import RootKeyOnServerError
from certs.node_link import SignerLink
from certs.pki import CertificateAuthority, RootCA, certificate_fingerprint_sha256, load_certificates
from server import issuer
from tests.harness import enroll_agent, running_agent, running_server, server_config, wait_until
from tests.procs import free_port, helpline, spawn, wait_for, wait_for_port

PASSPHRASE = "correct horse battery staple"
SIGNER_PASSPHRASE = "signer passphrase of some length"


@pytest.fixture
def signer(tmp_path: Path) -> Iterator[dict[str, Path | str]]:
    """Root (offline, encrypted), delegation made with the real CLI, the signer process serving it."""
    with running_signer(tmp_path) as made:
        yield made


@contextlib.contextmanager
def running_signer(tmp_path: Path, before_serve: Callable[[Path], object] | None = None
                   ) -> Iterator[dict[str, Path | str]]:
    """The ``signer`` fixture's work (other test modules make their own fixture of it): ``pid`` is the signer's.
    ``before_serve(signer_dir)`` runs between the delegation and the signer's start (e.g. ``signer bus-ca``)."""
    (tmp_path / "pass").write_text(PASSPHRASE + "\n")
    (tmp_path / "signer-pass").write_text(SIGNER_PASSPHRASE + "\n")
    helpline("certs", "root", "--out", str(tmp_path / "root"), "--passphrase-file", str(tmp_path / "pass"))
    helpline("certs", "delegate", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "signer"),
             "--signer-name", "127.0.0.1", "--server-name", "localhost", "--days", "30",
             "--passphrase-file", str(tmp_path / "pass"), "--signer-passphrase-file", str(tmp_path / "signer-pass"))
    if before_serve is not None:
        before_serve(tmp_path / "signer")
    port = free_port()
    with spawn("certs", "signer", "serve", "--dir", str(tmp_path / "signer"), "--host", "127.0.0.1",
               "--port", str(port), "--passphrase-file", str(tmp_path / "signer-pass"),
               log=tmp_path / "signer.log") as proc:
        wait_for_port(port, proc, timeout=60)
        yield {"dir": tmp_path / "signer", "url": f"https://127.0.0.1:{port}", "root": tmp_path / "root",
               "pid": str(proc.pid)}


def _join(tmp_path: Path, signer: dict[str, Path | str], pki: Path, *, node: str = "node-a",
          lifetime_s: int = 300, fraction: float = 0.5, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Allow ``node`` on the signer and join it with the real CLI (its token through a file)."""
    added = helpline("certs", "signer", "add-node", "--dir", str(signer["dir"]), "--node", node,
                     "--server-name", "localhost", "--lifetime-seconds", str(lifetime_s))
    (tmp_path / "token").write_text(added.stdout.splitlines()[-1])
    return helpline("certs", "join", "--dir", str(pki), "--signer", str(signer["url"]), "--node", node,
                    "--root-cert", str(Path(signer["root"]) / "ca.pem"), "--token-file", str(tmp_path / "token"),
                    "--renew-fraction", str(fraction), check=check)


def _served_chain_sha256(port: int, ca_pem: Path) -> str:
    """The SHA-256 of the server certificate a fresh TLS 1.3 handshake on ``port`` presents."""
    ctx = ssl.create_default_context(cafile=str(ca_pem))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.3"
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return certificate_fingerprint_sha256(x509.load_der_x509_certificate(der))


async def test_node_renews_without_restart_and_agents_keep_working(tmp_path: Path,
                                                                   signer: dict[str, Path | str]) -> None:
    """A node joined with a 5-minute intermediate renews it at a tenth of its life without a restart: the connected
    agent stays connected, new handshakes present the new chain, an agent with a certificate from the previous
    intermediate reconnects (its chain still leads to the root) and renews, and a new agent enrolls and connects."""
    data = tmp_path / "srv"
    _join(tmp_path, signer, data / "pki", lifetime_s=300, fraction=0.1)
    first = CertificateAuthority.load(data / "pki")
    assert [c.subject.rfc4514_string()[:30] for c in first.chain][1].startswith("CN=Helpline node signer")
    async with running_server(data) as server:
        assert server.ca.certificate == first.certificate
        old_served = await asyncio.to_thread(_served_chain_sha256, server.console_port, data / "pki" / "ca.pem")
        state = await enroll_agent(server, tmp_path / "agent-1")
        device_chain = load_certificates(state.cert_path)
        assert len(device_chain) == 3 and device_chain[1] == first.certificate
        assert device_chain[0].not_valid_after_utc <= first.not_after  # never outlives its issuer
        async with running_agent(state) as agent:
            await wait_until(lambda: agent.client.ready.is_set(), timeout=30, what="first agent connected")
            await wait_until(lambda: server.ca.certificate != first.certificate, timeout=120,
                             what="the node's intermediate renewed from the signer")
            assert agent.client.connections == 1 and agent.client.ready.is_set()  # not dropped by the swap
            second = server.ca
            assert second.links == first.links and second.certificate.public_key() != first.certificate.public_key()
            assert CertificateAuthority.load(data / "pki").certificate in (second.certificate,
                                                                            server.ca.certificate)
            new_served = await asyncio.to_thread(_served_chain_sha256, server.console_port,
                                                 data / "pki" / "ca.pem")
            assert new_served != old_served
        # The first agent comes back with its certificate from the first intermediate: accepted, told to renew.
        async with running_agent(state) as agent:
            await wait_until(lambda: agent.client.connections >= 2 and agent.client.ready.is_set(), timeout=60,
                             what="reconnect after renewing from the current intermediate")
            renewed = load_certificates(state.cert_path)
            assert renewed[1] != first.certificate and renewed[0].not_valid_after_utc <= renewed[1].not_valid_after_utc
        # A new device enrolls after the swap and connects.
        state2 = await enroll_agent(server, tmp_path / "agent-2")
        assert load_certificates(state2.cert_path)[1] != first.certificate
        async with running_agent(state2) as agent2:
            await wait_until(lambda: agent2.client.ready.is_set(), timeout=30, what="second agent connected")


async def test_a_node_removed_from_the_allow_list_cannot_renew(tmp_path: Path,
                                                               signer: dict[str, Path | str]) -> None:
    """After 'certs signer remove-node' the node's renewal (proven with its current key) is refused, and the
    node keeps its current intermediate; a forged proof and a reused token are refused too."""
    from certs.node_link import SignerRefused, renew

    pki = tmp_path / "srv" / "pki"
    joined = _join(tmp_path, signer, pki)
    assert "joined" in joined.stdout
    link = SignerLink.load(pki)
    assert link is not None
    current = CertificateAuthority.load(pki)
    renewed = await renew(pki, link, current=current, now=datetime.now(UTC))  # allowed: works
    assert renewed.certificate != current.certificate
    forged = SimpleNamespace(certificate=renewed.certificate, signing_key=current.signing_key)  # not its key
    with pytest.raises(SignerRefused, match="prove the request"):
        await renew(pki, link, current=forged, now=datetime.now(UTC))  # type: ignore[arg-type]
    with pytest.raises(SignerRefused, match="token"):
        await renew(pki, link, current=None, token=(tmp_path / "token").read_text(), now=datetime.now(UTC))
    helpline("certs", "signer", "remove-node", "--dir", str(signer["dir"]), "--node", "node-a")
    with pytest.raises(SignerRefused, match="allow-list"):
        await renew(pki, link, current=renewed, now=datetime.now(UTC))
    assert CertificateAuthority.load(pki).certificate == renewed.certificate  # nothing was replaced


def test_node_refuses_to_start_with_the_delegation_or_root_key(tmp_path: Path,
                                                               signer: dict[str, Path | str]) -> None:
    """A node's PKI directory holding the signer's (encrypted) delegation key or the root's key is refused,
    by the server in-process and by the real 'helpline server' command; the signer refuses the root's key."""
    data = tmp_path / "srv"
    _join(tmp_path, signer, data / "pki")
    config = server_config(data)
    issuer.load(config)  # as joined: fine
    for stray in (Path(signer["dir"]) / "delegation.key", Path(signer["root"]) / "ca.key"):
        shutil.copy(stray, data / "pki" / "stray.key")
        with pytest.raises(RootKeyOnServerError):
            issuer.load(config)
    result = helpline("server", "--data", str(data), "--host", "127.0.0.1", "--agent-port", "0",
                      "--console-port", "0", check=False)
    assert result.returncode == 1 and "private key" in result.stderr and "Traceback" not in result.stderr
    (data / "pki" / "stray.key").unlink()

    shutil.copy(Path(signer["root"]) / "ca.key", Path(signer["dir"]) / "ca.key")
    port = free_port()
    refused = helpline("certs", "signer", "serve", "--dir", str(signer["dir"]), "--host", "127.0.0.1",
                       "--port", str(port), "--passphrase-file", str(tmp_path / "signer-pass"), check=False)
    assert refused.returncode == 1 and "root's private key" in refused.stderr


def test_signer_speaks_only_tls13_and_status_shows_the_chain(tmp_path: Path, signer: dict[str, Path | str]) -> None:
    """The signer refuses TLS 1.2; 'certs status' on a joined node lists root, delegation, intermediate and
    server with their ends and says the node renews from the signer."""
    port = int(str(signer["url"]).rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=str(Path(signer["root"]) / "ca.pem"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    pki = tmp_path / "srv" / "pki"
    _join(tmp_path, signer, pki, lifetime_s=7200)
    status = helpline("certs", "status", "--dir", str(pki)).stdout
    roles = [line.split()[0] for line in status.splitlines()[:4]]
    assert roles == ["root", "delegation", "intermediate", "server"], status
    assert "renews its intermediate from https://127.0.0.1" in status
    assert all(" ok " in line for line in status.splitlines()[:4]), status


def test_a_root_from_before_delegation_cannot_delegate(tmp_path: Path) -> None:
    """A root of path length 1 (made before delegation) is refused by 'certs delegate' with the reason; its
    'certs intermediate' setup keeps working."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from certs.delegation import create_delegation
    from certs.errors import CertError
    from certs.pki import CLOCK_SKEW

    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "old root")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - CLOCK_SKEW).not_valid_after(now.replace(year=now.year + 5))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .sign(key, hashes.SHA256()))
    old = RootCA(cert, key)
    with pytest.raises(CertError, match="path length 1"):
        create_delegation(old, tmp_path / "signer", signer_host="signer", server_names=["localhost"],
                          passphrase=SIGNER_PASSPHRASE.encode(), now=now, lifetime=timedelta(days=30))
    ca = old.new_intermediate(["localhost"], now=now)
    assert ca.chain == (ca.certificate,)


async def test_renewed_delegation_accepts_the_nodes_current_intermediates(tmp_path: Path,
                                                                          signer: dict[str, Path | str]) -> None:
    """'certs delegate' again with the same root renews the delegation without --force; the signer restarted on it
    renews a node proven by an intermediate of the previous delegation. Another root's delegation needs --force."""
    from certs.node_link import renew

    pki = tmp_path / "srv" / "pki"
    _join(tmp_path, signer, pki)
    before = CertificateAuthority.load(pki)
    delegate = ("certs", "delegate", "--out", str(signer["dir"]), "--signer-name", "127.0.0.1",
                "--server-name", "localhost", "--passphrase-file", str(tmp_path / "pass"),
                "--signer-passphrase-file", str(tmp_path / "signer-pass"))
    helpline(*delegate, "--root", str(signer["root"]))
    assert (Path(signer["dir"]) / "delegation-previous.pem").exists()
    port = free_port()
    with spawn("certs", "signer", "serve", "--dir", str(signer["dir"]), "--host", "127.0.0.1", "--port", str(port),
               "--passphrase-file", str(tmp_path / "signer-pass"), log=tmp_path / "signer-2.log") as proc:
        wait_for_port(port, proc, timeout=60)
        link = SignerLink(f"https://127.0.0.1:{port}", "node-a")
        after = await renew(pki, link, current=before, now=datetime.now(UTC))
    assert after.links[0] != before.links[0] and after.links[0].issuer == before.links[0].issuer

    helpline("certs", "root", "--out", str(tmp_path / "other-root"), "--passphrase-file", str(tmp_path / "pass"))
    other = helpline(*delegate, "--root", str(tmp_path / "other-root"), check=False)
    assert other.returncode == 1 and "--force" in other.stderr


def test_a_real_server_process_renews_while_a_real_agent_stays_connected(tmp_path: Path,
                                                                          signer: dict[str, Path | str]) -> None:
    """'helpline server' (one process, never restarted) on a delegated node renews its intermediate from the
    signer: the served chain changes, a running 'helpline agent run' is not reconnected, and an agent enrolled
    after the swap gets a certificate from the new intermediate and connects."""
    data = tmp_path / "srv"
    _join(tmp_path, signer, data / "pki", lifetime_s=300, fraction=0.1)
    first = CertificateAuthority.load(data / "pki").certificate
    agent_port, console_port = free_port(), free_port()
    config = tmp_path / "helpline.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\nhost = "127.0.0.1"\nkeepalive_s = 5.0\n')
    env = {"HELPLINE_AGENT_PORT": str(agent_port), "HELPLINE_CONSOLE_PORT": str(console_port),
           "HELPLINE_BACKOFF_CAP_S": "1"}
    ca_pem = data / "pki" / "ca.pem"

    def enroll(state: Path) -> None:
        words = helpline("admin", "token", "create", "--group", "default", "--config", str(config),
                         env=env).stdout.split()
        helpline("agent", "enroll", f"https://localhost:{console_port}", words[4], "--ca-sha256", words[6],
                 "--state", str(state))

    def connections(log: Path) -> int:
        return log.read_text().count('"connected"') if log.exists() else 0

    with spawn("server", "--config", str(config), "--log-format", "json", log=tmp_path / "server.log",
               env=env) as server:
        wait_for_port(console_port, server, timeout=60)
        old_served = _served_chain_sha256(console_port, ca_pem)
        enroll(tmp_path / "agent-1")
        log1 = tmp_path / "agent-1.log"
        with spawn("agent", "run", "--state", str(tmp_path / "agent-1"), "--log-format", "json", log=log1, env=env):
            wait_for(lambda: connections(log1) == 1, timeout=60, what="the first agent connected")
            wait_for(lambda: _served_chain_sha256(console_port, ca_pem) != old_served, timeout=150,
                     what="the server presenting a renewed chain")
            assert server.poll() is None  # the same process: no restart
            current = CertificateAuthority.load(data / "pki").certificate
            assert current != first
            enroll(tmp_path / "agent-2")
            chain = load_certificates(tmp_path / "agent-2" / "device.pem")
            assert chain[1] != first and len(chain) == 3
            log2 = tmp_path / "agent-2.log"
            with spawn("agent", "run", "--state", str(tmp_path / "agent-2"), "--log-format", "json", log=log2,
                       env=env):
                wait_for(lambda: connections(log2) == 1, timeout=60, what="the second agent connected")
            assert connections(log1) == 1, log1.read_text()[-2000:]  # never dropped by the swap
    assert "renewed the node's intermediate from the signer" in (tmp_path / "server.log").read_text()


def test_retry_delay_backs_off_with_jitter_and_never_past_a_tenth_of_what_is_left() -> None:
    """5 s, then doubling to 5 minutes (±20 %), and never longer than a tenth of the intermediate's remaining life."""
    assert 4.0 <= issuer.retry_delay(1, 86400) <= 6.0
    assert 32.0 <= issuer.retry_delay(4, 86400) <= 48.0
    assert 240.0 <= issuer.retry_delay(30, 86400) <= 360.0
    assert issuer.retry_delay(30, 100) <= 12.0 and issuer.retry_delay(30, 0) <= 1.2


async def test_renewal_retries_while_the_signer_is_down_and_succeeds_when_it_is_back(
        tmp_path: Path, signer: dict[str, Path | str], caplog: pytest.LogCaptureFixture) -> None:
    """With the signer stopped when renewal falls due, the node logs why and retries with backoff, keeps serving on
    its current intermediate, and renews once a signer answers again."""
    data = tmp_path / "srv"
    port = free_port()
    signer_args = ("certs", "signer", "serve", "--dir", str(signer["dir"]), "--host", "127.0.0.1", "--port",
                   str(port), "--passphrase-file", str(tmp_path / "signer-pass"))
    with spawn(*signer_args, log=tmp_path / "signer-b.log") as proc:
        wait_for_port(port, proc, timeout=60)
        _join(tmp_path, {**signer, "url": f"https://127.0.0.1:{port}"}, data / "pki", lifetime_s=300, fraction=0.1)
    first = CertificateAuthority.load(data / "pki").certificate
    with caplog.at_level(logging.WARNING, logger="server.issuer"):
        async with running_server(data) as server:
            await wait_until(lambda: caplog.text.count("could not renew") >= 2, timeout=120,
                             what="two failed renewals logged")
            assert server.ca.certificate == first
            with spawn(*signer_args, log=tmp_path / "signer-c.log") as proc:
                await asyncio.to_thread(wait_for_port, port, proc, 60)  # the server's loop keeps running
                await wait_until(lambda: server.ca.certificate != first, timeout=120,
                                 what="renewed once the signer is back")
