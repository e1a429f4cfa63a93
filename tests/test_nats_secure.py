"""The bus denies by default: nats-server from ``helpline certs nats``, mutual TLS, per-node permissions.

A real nats-server runs the generated configuration (stopped by PID). Two nodes connect with their own
client certificates and a revocation on A closes the device's channel on B; a client without a
certificate is refused; a node's certificate cannot publish or read outside its subjects; the object
store works within them; a node configured with plaintext NATS off the machine refuses to start.
The two-node test needs HELPLINE_TEST_PG_URL (nodes share PostgreSQL), like tests/test_multinode_bus.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from nats.aio.client import Client
from nats.aio.msg import Msg

from certs.nats import BusCA, BusPaths
from certs.pki import write_certificate, write_private_key
from common.config import ConfigError
from server import devices
from server.bus import connection
from server.bus.connection import check_secure, connect
from server.config import ServerConfig
from server.storage.objects import JetStreamObjectStore
from tests.harness import enroll_agent, make_pki, running_agent, running_server, wait_until
from tests.nats_server import NATS_SERVER, stop
from tests.procs import free_port, helpline, wait_for_port
from tests.test_multinode_bus import _pg_url

NODES = ("node-a", "node-b")


@dataclass
class SecureNats:
    directory: Path
    url: str
    proc: subprocess.Popen[bytes]
    cli_output: str
    cli_args: list[str]

    def create_bucket(self) -> str:
        """``helpline certs nats-bucket`` as the administrator (nodes may not create the stream)."""
        return helpline("certs", "nats-bucket", "--dir", str(self.directory), "--url", self.url).stdout

    def node_config(self, node: str, **extra: object) -> dict[str, object]:
        """The [server] keys the CLI printed for ``node``, with this test's paths."""
        return {"nats_url": self.url, "nats_tls_ca": self.directory / "ca.pem", "node_id": node,
                "nats_tls_cert": self.directory / "nodes" / f"{node}.pem",
                "nats_tls_key": self.directory / "nodes" / f"{node}.key", **extra}


@contextlib.contextmanager
def secure_nats(tmp_path: Path) -> Iterator[SecureNats]:
    """``helpline certs nats`` for node-a and node-b, then nats-server -c on its config (fails if missing)."""
    if not Path(NATS_SERVER).exists():
        raise RuntimeError("nats-server is not installed (scripts/setup.sh installs Debian's nats-server)")
    port = free_port()
    bus = tmp_path / "bus"
    args = ["certs", "nats", "--dir", str(bus), "--server-name", "localhost", "--listen", f"127.0.0.1:{port}",
            "--store-dir", str(tmp_path / "js"), "--install-dir", str(bus / "server")]
    out = helpline(*args, *(a for n in NODES for a in ("--node", n))).stdout
    log = (tmp_path / "nats.log").open("wb")
    proc = subprocess.Popen([NATS_SERVER, "-c", str(bus / "server" / "nats-server.conf")], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, timeout=30)
        yield SecureNats(bus, f"tls://localhost:{port}", proc, out, args)
    finally:
        stop(proc)
        log.close()


def _node(bus: SecureNats, node: str) -> ServerConfig:
    return ServerConfig(**bus.node_config(node))  # type: ignore[arg-type]


def _client_context(bus: SecureNats, node: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(bus.directory / "ca.pem"))
    if node:
        ctx.load_cert_chain(str(bus.directory / "nodes" / f"{node}.pem"), str(bus.directory / "nodes" / f"{node}.key"))
    return ctx


def test_the_command_writes_private_keys_client_certificates_and_a_locked_config(tmp_path: Path) -> None:
    """Keys 0600, node certificates clientAuth with the node's NATS user as subject, mTLS and users in the config."""
    with secure_nats(tmp_path) as bus:
        for key in [bus.directory / "ca" / "ca.key", bus.directory / "ca" / "admin.key",
                    bus.directory / "server" / "nats-server.key",
                    *(bus.directory / "nodes" / f"{n}.key" for n in NODES)]:
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert stat.S_IMODE((bus.directory / "ca").stat().st_mode) == 0o700
        cert = x509.load_pem_x509_certificate((bus.directory / "nodes" / "node-a.pem").read_bytes())
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert cert.subject.rfc4514_string() == "CN=node-a,OU=helpline-nats-node"
        conf = (bus.directory / "server" / "nats-server.conf").read_text()
        assert "verify_and_map: true" in conf and "jetstream" in conf and "no_auth_user" not in conf
        assert '"helpline.node.node-a.session"' in conf and '"_INBOX.node-b.>"' in conf
        assert 'nats_tls_cert = "/etc/helpline/nats/node-b.pem"' in bus.cli_output
        assert 'nats_url = "tls://localhost:' in bus.cli_output
        # server/ is what goes to the NATS host: the config names only it, never the CA key's ca/.
        assert sorted(p.name for p in (bus.directory / "server").iterdir()) == [
            "ca.pem", "nats-server.conf", "nats-server.key", "nats-server.pem"]
        assert f'cert_file: "{bus.directory / "server" / "nats-server.pem"}"' in conf
        assert "ca.key" not in conf and f"{bus.directory / 'ca'}/" not in conf


def test_the_config_names_the_install_directory_not_the_workstation(tmp_path: Path) -> None:
    """--install-dir (default /etc/nats/helpline) is what the config's paths say; an old layout's CA moves into ca/."""
    bus = tmp_path / "bus"
    bus.mkdir(mode=0o700)
    old = BusCA.create(now=datetime.now(UTC))  # a directory from before ca/: the CA at its top level
    write_certificate(bus / "ca.pem", old.certificate)
    write_private_key(bus / "ca.key", old._key)
    helpline("certs", "nats", "--dir", str(bus), "--node", "node-a", "--server-name", "nats.internal")
    conf = (bus / "server" / "nats-server.conf").read_text()
    assert 'cert_file: "/etc/nats/helpline/nats-server.pem"' in conf
    assert 'ca_file: "/etc/nats/helpline/ca.pem"' in conf and str(tmp_path) not in conf
    assert not (bus / "ca.key").exists() and (bus / "ca" / "ca.key").exists()
    assert (bus / "ca" / "ca.pem").read_bytes() == (bus / "ca.pem").read_bytes()
    assert BusCA.load(BusPaths(bus)).certificate == old.certificate  # the same CA: old node certs stay valid


async def test_two_nodes_on_mutual_tls_carry_a_revocation(tmp_path: Path) -> None:
    """Nodes with their own client certificates: a device revoked on A loses its channel on B by the bus's ring."""
    _pg_url()
    with secure_nats(tmp_path) as bus:
        pki = make_pki(tmp_path / "pki")
        from tests import pg_store

        shared = {"pki_dir": pki, "database_url": pg_store.url_for(tmp_path / "shared")}
        async with running_server(tmp_path / "a", **bus.node_config("node-a", **shared)) as a, \
                running_server(tmp_path / "b", **bus.node_config("node-b", **shared)) as b:
            assert a.bus is not None and b.bus is not None
            state = await enroll_agent(b, tmp_path / "agent")
            async with running_agent(state) as agent:
                await asyncio.wait_for(agent.client.ready.wait(), 30)
                await wait_until(lambda: b.connections.get(state.device_id) is not None, timeout=30,
                                 what="the channel on B")
                holder = await a.bus.holder(state.device_id)  # request/reply across nodes, within permissions
                assert holder is not None and holder.node == "node-b"
                assert b.watcher is not None
                b.watcher.slow_down(60.0)  # only the ring over the mTLS bus can close it in time
                started = time.monotonic()
                assert await devices.revoke(a.db, state.device_id, actor="test")
                await wait_until(lambda: b.connections.get(state.device_id) is None, timeout=10, interval=0.005,
                                 what="B closing the revoked device's channel")
                print(f"revocation fan-out A -> B over mTLS NATS: {(time.monotonic() - started) * 1000:.1f} ms")


async def test_a_client_without_a_node_certificate_is_refused(tmp_path: Path) -> None:
    """No certificate: the TLS handshake (verifying the bus CA) succeeds on the client's side, and
    nats-server refuses the connection for want of a client certificate."""
    with secure_nats(tmp_path) as bus:
        with pytest.raises((nats.errors.Error, OSError, TimeoutError, ssl.SSLError)):
            client = await nats.connect(bus.url, tls=_client_context(bus, None), allow_reconnect=False,
                                        connect_timeout=5, max_reconnect_attempts=0)
            await client.close()


async def test_the_server_refuses_a_plaintext_client(tmp_path: Path) -> None:
    """The server, not the client, refuses plaintext: a raw socket speaking the NATS protocol without TLS
    (nats-py would switch to TLS on the INFO's tls_required) gets no PONG and the connection closed."""
    with secure_nats(tmp_path) as bus:
        port = int(bus.url.rpartition(":")[2])
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        try:
            info = await asyncio.wait_for(reader.readline(), 10)
            assert info.startswith(b"INFO ") and b'"tls_required":true' in info, info
            writer.write(b'CONNECT {"verbose":false,"pedantic":false,"tls_required":false}\r\nPING\r\n')
            await writer.drain()
            rest = await asyncio.wait_for(reader.read(), 20)  # until nats-server closes the connection
            assert b"PONG" not in rest, rest
            assert reader.at_eof()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _raw(bus: SecureNats, node: str, errors: list[str]) -> Client:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(bus.url, tls=_client_context(bus, node), error_cb=on_error,
                              inbox_prefix=f"_INBOX.{node}", allow_reconnect=False, connect_timeout=10)


async def _sent(client: Client) -> None:
    """Everything ``client`` sent so far has reached nats-server. One ``flush()`` is not enough: nats-py writes
    its PING straight to the socket while SUB/PUB wait in its pending buffer for the flusher task, so the PONG
    can come back before them (seen in nats-server's trace: node-b's SUBs arrived after node-a's PUB). The
    first round trip lets the flusher write them; the second PING follows them."""
    await client.flush()
    await client.flush()


async def test_a_node_cannot_publish_or_read_outside_its_subjects(tmp_path: Path) -> None:
    """node-a may ask node-b's routed subject, but not forge replies into B's inbox, read B's requests or
    call JetStream on another stream; each refusal is a permissions violation from nats-server."""
    with secure_nats(tmp_path) as bus:
        a_errors: list[str] = []
        a, b = await _raw(bus, "node-a", a_errors), await _raw(bus, "node-b", [])
        try:
            got: asyncio.Queue[str] = asyncio.Queue()

            async def on_b(msg: Msg) -> None:
                await got.put(msg.subject)

            await b.subscribe("helpline.node.node-b.session", cb=on_b)
            await b.subscribe("_INBOX.node-b.>", cb=on_b)
            await _sent(b)
            spy = await a.subscribe("helpline.node.node-b.session")  # B's routed requests: not A's to read
            await a.publish("_INBOX.node-b.forged", b"a forged reply")
            await a.publish("$JS.API.STREAM.DELETE.OTHER", b"")
            await a.publish("helpline.node.node-b.session", b"allowed")
            await _sent(a)
            try:
                first = await asyncio.wait_for(got.get(), 10)
            except TimeoutError:  # seen twice under a full two-worker pass, never alone: say what the bus said
                raise AssertionError("node-b got nothing in 10 s; a: " + repr(a_errors) + " connected: "
                                     + repr((a.is_connected, b.is_connected)) + "; nats-server log:\n"
                                     + (tmp_path / "nats.log").read_text(errors="replace")[-3000:]) from None
            assert first == "helpline.node.node-b.session"
            await wait_until(lambda: len(a_errors) >= 3, timeout=10, what="three permission violations")
            said = [e.lower() for e in a_errors]  # nats-py lower-cases the server's -ERR
            assert all("permissions violation" in e for e in said), a_errors
            assert any('publish to "_inbox.node-b.forged"' in e for e in said), a_errors
            assert any('publish to "$js.api.stream.delete.other"' in e for e in said), a_errors
            assert any('subscription to "helpline.node.node-b.session"' in e for e in said), a_errors
            assert got.empty(), "B received what A may not send it"
            with pytest.raises(nats.errors.TimeoutError):
                await spy.next_msg(timeout=0.3)
        finally:
            await a.close()
            await b.close()


async def test_the_object_store_works_within_the_nodes_permissions(tmp_path: Path) -> None:
    """The administrator makes the bucket once; a recording put by node-a is fetched by node-b byte for byte
    (chunk by chunk, no consumer), listed, replaced (old chunks purged) and deleted within the nodes' rights."""
    with secure_nats(tmp_path) as bus:
        assert "created" in bus.create_bucket()
        assert "exists" in bus.create_bucket()
        source = tmp_path / "rec.hlrec"
        source.write_bytes(bytes(range(256)) * 4096)
        put, get = JetStreamObjectStore(_node(bus, "node-a")), JetStreamObjectStore(_node(bus, "node-b"))
        try:
            await put.put("recordings/s1.hlrec", source)
            assert await get.fetch("recordings/s1.hlrec", tmp_path / "out" / "s1.hlrec")
            assert (tmp_path / "out" / "s1.hlrec").read_bytes() == source.read_bytes()
            source.write_bytes(b"shorter" * 30000)
            await put.put("recordings/s1.hlrec", source)  # replaces: nats-py purges the old chunks
            await put.put("artifacts/r1.tar.gz", source)
            assert await get.fetch("recordings/s1.hlrec", tmp_path / "out" / "again")
            assert (tmp_path / "out" / "again").read_bytes() == source.read_bytes()
            assert await get.list() == ["artifacts/r1.tar.gz", "recordings/s1.hlrec"]
            assert await get.delete("artifacts/r1.tar.gz")
            assert await put.list("artifacts/") == []
            assert not await get.fetch("artifacts/r1.tar.gz", tmp_path / "out" / "gone")
        finally:
            await put.close()
            await get.close()


@pytest.mark.parametrize(("url", "extra", "says"), [
    ("nats://10.1.2.3:4222", {}, "TLS"),
    ("nats://user:secret@nats.internal:4222", {}, "TLS"),
    ("tls://nats.internal:4222", {}, "client certificate"),
    ("tls://nats.internal:4222", {"nats_tls_cert": Path("/x.pem"), "nats_tls_key": Path("/x.key")}, "nats_tls_ca"),
    ("nats://127.0.0.1:4222,nats://10.0.0.2:4222", {}, "10.0.0.2"),
])
async def test_an_unauthenticated_or_plaintext_bus_off_the_machine_refuses_to_start(
        url: str, extra: dict[str, object], says: str) -> None:
    """connect() refuses before touching the network, saying what to set (never the password)."""
    config = ServerConfig(nats_url=url, **extra)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=says) as refused:
        await connect(config, start_timeout_s=0.1)
    assert "secret" not in str(refused.value) and "helpline certs nats" in str(refused.value)


def test_a_secure_bus_and_loopback_plaintext_pass_the_check(caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS + CA + client certificate (or credentials) off the machine passes; loopback plaintext warns once."""
    check_secure(ServerConfig(nats_url="tls://nats.internal:4222", nats_tls_ca=Path("/ca.pem"),
                              nats_tls_cert=Path("/n.pem"), nats_tls_key=Path("/n.key")))
    check_secure(ServerConfig(nats_url="tls://u:p@[2001:db8::1]:4222", nats_tls_ca=Path("/ca.pem")))
    monkeypatch.setattr(connection, "_warned_plaintext", False)
    with caplog.at_level(logging.WARNING, logger="server.bus.connection"):
        for _ in range(3):
            check_secure(ServerConfig(nats_url="nats://127.0.0.1:4222,nats://localhost:4223,nats://[::1]:4224"))
    assert sum("plaintext" in r.getMessage() for r in caplog.records) == 1


def test_the_cli_refuses_an_insecure_bus(tmp_path: Path) -> None:
    """An admin command on a node configured with plaintext NATS off the machine exits 2 with the reason."""
    config = tmp_path / "helpline.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\nnats_url = "nats://192.0.2.7:4222"\n')
    helpline("certs", "init", "--dir", str(tmp_path / "data" / "pki"), "--discard-root")
    result = helpline("admin", "device", "list", "--config", str(config), check=False, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "without TLS" in result.stderr and "helpline certs nats" in result.stderr


async def test_a_node_under_another_id_than_its_certificate_refuses_to_start(tmp_path: Path) -> None:
    """node-b's certificate on a node whose node_id is node-a: ConfigError naming the id to set."""
    with secure_nats(tmp_path) as bus:
        config = ServerConfig(**{**bus.node_config("node-b"), "node_id": "node-a"})  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match='node_id = "node-b"'):
            await connect(config, start_timeout_s=5)


async def test_a_node_cannot_change_the_bucket_stream_or_point_a_consumer_at_another_inbox(tmp_path: Path) -> None:
    """With node-a's certificate: no stream update (adding B's routed and inbox subjects to capture them),
    no stream delete, no bucket creation, no consumer delivering into node-b's inbox, no direct get —
    each refused by nats-server, and the stream's subjects unchanged."""
    from nats.js.api import StreamConfig

    with secure_nats(tmp_path) as bus:
        bus.create_bucket()
        a_errors: list[str] = []
        a, b = await _raw(bus, "node-a", a_errors), await _raw(bus, "node-b", [])
        try:
            got: asyncio.Queue[str] = asyncio.Queue()

            async def on_b(msg: Msg) -> None:
                await got.put(msg.subject)

            await b.subscribe("_INBOX.node-b.>", cb=on_b)
            await _sent(b)
            js = a.jetstream(timeout=2)
            stream = "OBJ_helpline-artifacts"
            info = await js.stream_info(stream)  # allowed: the object store reads it
            subjects = list(info.config.subjects or [])
            capture = StreamConfig(name=stream, subjects=[*subjects, "helpline.node.node-b.call", "_INBOX.node-b.>"])
            attempts = [
                js.update_stream(capture),
                js.delete_stream(stream),
                js.purge_stream("OTHER"),
                js.add_stream(StreamConfig(name="OBJ_other", subjects=["$O.other.>"])),
                js.add_consumer(stream, deliver_subject="_INBOX.node-b.stolen"),
                a.request(f"$JS.API.DIRECT.GET.{stream}", b'{"seq": 1}', timeout=2),
            ]
            for attempt in attempts:
                with pytest.raises(nats.errors.TimeoutError):  # refused: no answer ever comes
                    await attempt
            await wait_until(lambda: len(a_errors) >= len(attempts), timeout=10, what="the permission violations")
            said = " ".join(e.lower() for e in a_errors)
            for verb in ("stream.update", "stream.delete", "stream.purge.other", "stream.create",
                         "consumer.create", "direct.get"):
                assert f'publish to "$js.api.{verb}' in said, a_errors
            after = await js.stream_info(stream)
            assert list(after.config.subjects or []) == subjects
            assert got.empty(), "node-b's inbox received what node-a sent it"
        finally:
            await a.close()
            await b.close()


async def _connects(bus: SecureNats, pem: Path, key: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(bus.directory / "ca.pem"))
    ctx.load_cert_chain(str(pem), str(key))
    try:
        client = await nats.connect(bus.url, tls=ctx, allow_reconnect=False, connect_timeout=5,
                                    max_reconnect_attempts=0, inbox_prefix="_INBOX.node-a")
    except (nats.errors.Error, OSError, TimeoutError, ssl.SSLError):
        return False
    try:
        await client.flush(timeout=5)
        return True
    except (nats.errors.Error, OSError, TimeoutError):
        return False
    finally:
        await client.close()


async def test_a_reissued_node_certificate_replaces_the_old_one_at_reload(tmp_path: Path) -> None:
    """Re-running the command for node-a pins its new certificate only: after nats-server reloads, the old
    one (same subject, same user, still within its dates) is refused, the new one and node-b's still work."""
    with secure_nats(tmp_path) as bus:
        nodes = bus.directory / "nodes"
        old_pem, old_key = tmp_path / "old-a.pem", tmp_path / "old-a.key"
        old_pem.write_bytes((nodes / "node-a.pem").read_bytes())
        old_key.write_bytes((nodes / "node-a.key").read_bytes())
        old_key.chmod(0o600)
        b_before = (nodes / "node-b.pem").read_bytes()
        assert await _connects(bus, old_pem, old_key)
        helpline(*bus.cli_args, "--node", "node-a")
        assert (nodes / "node-b.pem").read_bytes() == b_before, "node-b was re-keyed without being named"
        os.kill(bus.proc.pid, signal.SIGHUP)  # nats-server reloads its config (README: --signal reload)
        deadline = time.monotonic() + 30
        while await _connects(bus, old_pem, old_key):
            assert time.monotonic() < deadline, "the replaced certificate still connects after the reload"
            await asyncio.sleep(0.1)
        assert await _connects(bus, nodes / "node-a.pem", nodes / "node-a.key")
        assert await _connects(bus, nodes / "node-b.pem", nodes / "node-b.key")


async def test_a_renewed_node_certificate_connects_without_a_reload(tmp_path: Path) -> None:
    """--renew re-certifies node-a's key: the running nats-server (not reloaded) accepts the new certificate,
    its config is unchanged, and node-a's key was not touched."""
    with secure_nats(tmp_path) as bus:
        nodes = bus.directory / "nodes"
        conf, key = (bus.directory / "server" / "nats-server.conf").read_bytes(), (nodes / "node-a.key").read_bytes()
        before = x509.load_pem_x509_certificate((nodes / "node-a.pem").read_bytes())
        helpline("certs", "nats", "--dir", str(bus.directory), "--renew", "--node", "node-a", "--days", "30")
        after = x509.load_pem_x509_certificate((nodes / "node-a.pem").read_bytes())
        assert after.serial_number != before.serial_number
        assert (bus.directory / "server" / "nats-server.conf").read_bytes() == conf
        assert (nodes / "node-a.key").read_bytes() == key
        assert await _connects(bus, nodes / "node-a.pem", nodes / "node-a.key")


def test_advertised_servers_must_pass_the_same_check_as_configured_ones() -> None:
    """nats-py adds a cluster's connect_urls to its pool with the current URL's scheme: a plaintext loopback
    node never picks an advertised remote server (even a less-tried one); a tls:// node with the bus CA and
    its certificate may, since that server is verified like the configured one."""
    from urllib.parse import urlparse

    from nats.aio.client import Server

    plain = ServerConfig(nats_url="nats://127.0.0.1:4222")
    pick = connection.server_picker(plain)
    configured = Server(uri=urlparse("nats://127.0.0.1:4222"), reconnects=7)
    advertised = Server(uri=urlparse("nats://10.0.0.9:4222"), reconnects=0)
    for _ in range(3):
        chosen, _delay = pick([advertised, configured], {})
        assert chosen is not None and chosen.uri.netloc == "127.0.0.1:4222"
    secure = ServerConfig(nats_url="tls://nats1.internal:4222", nats_tls_ca=Path("/ca.pem"),
                          nats_tls_cert=Path("/n.pem"), nats_tls_key=Path("/n.key"))
    pick = connection.server_picker(secure)
    chosen, _delay = pick([Server(uri=urlparse("tls://nats1.internal:4222"), reconnects=3),
                           Server(uri=urlparse("tls://10.0.0.9:4222"), reconnects=0)], {})
    assert chosen is not None and chosen.uri.netloc == "10.0.0.9:4222"
