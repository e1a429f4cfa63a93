"""Tests for certs.tls and certs.pinning over real TLS connections on 127.0.0.1.

Each organisation has a root and two server nodes, each node its own intermediate: chains
are built by real OpenSSL handshakes, as agents and the server build them.
"""

from __future__ import annotations

import http.server
import logging
import queue
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from certs.errors import CertError, PinMismatchError
from certs.pinning import fetch_pinned_ca, fingerprint_of_pem, normalize_fingerprint
from certs.pki import (
    CertificateAuthority,
    PkiPaths,
    RootCA,
    build_csr,
    device_id_from_certificate,
    generate_device_key,
    install_intermediate,
    write_certificate,
    write_private_key,
)
from certs.tls import agent_client_context, agent_listener_context, console_listener_context

log = logging.getLogger(__name__)
TIMEOUT = 5.0


@dataclass(frozen=True)
class Node:
    """One server node's PKI directory (under an org root) plus a device certificate chain it issued."""

    paths: PkiPaths
    ca: CertificateAuthority
    device_cert: Path
    device_key: Path


def _device(ca: CertificateAuthority, directory: Path, device_id: str, *, chain: bool = True) -> tuple[Path, Path]:
    """Issue a device certificate; write it as the agent stores it (with its intermediate) unless ``chain`` is off."""
    key = generate_device_key()
    cert = ca.sign_device_csr(build_csr(key), device_id, now=datetime.now(UTC))
    name = f"{device_id}{'' if chain else '-alone'}"
    if chain:
        (directory / f"{name}.pem").write_bytes(ca.chain_pem(cert))
    else:
        write_certificate(directory / f"{name}.pem", cert)
    write_private_key(directory / f"{name}.key", key)
    return directory / f"{name}.pem", directory / f"{name}.key"


def _make_node(root: RootCA, directory: Path, device_id: str) -> Node:
    # TLS checks validity against the real clock, so issue with the real time.
    now = datetime.now(UTC)
    ca = root.new_intermediate(["helpline.test"], now=now)
    paths = install_intermediate(directory, ca, ["helpline.test"], now=now)
    cert, key = _device(ca, directory, device_id)
    return Node(paths, ca, cert, key)


@pytest.fixture(scope="module")
def root() -> RootCA:
    return RootCA.create(now=datetime.now(UTC))


@pytest.fixture(scope="module")
def org(root: RootCA, tmp_path_factory: pytest.TempPathFactory) -> Node:
    return _make_node(root, tmp_path_factory.mktemp("org"), "dev-good")


@pytest.fixture(scope="module")
def sibling(root: RootCA, tmp_path_factory: pytest.TempPathFactory) -> Node:
    """Another server node of the same organisation: same root, its own intermediate."""
    return _make_node(root, tmp_path_factory.mktemp("sibling"), "dev-sibling")


@pytest.fixture(scope="module")
def other_org(tmp_path_factory: pytest.TempPathFactory) -> Node:
    return _make_node(RootCA.create(now=datetime.now(UTC)), tmp_path_factory.mktemp("other"), "dev-good")


# --------------------------------------------------------------------------- a tiny TLS server


class TlsServer:
    """Accepts connections in a thread; reports each handshake's outcome on `results`.

    On success it greets the client with ``hello <device id>`` taken from the peer certificate.
    """

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)  # lets the accept loop notice `stop`
        self.port: int = self.sock.getsockname()[1]
        self.results: queue.Queue[tuple[str, object]] = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tls-test-server", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                log.info("test TLS server accept failed: %r", exc)
                return
            conn.settimeout(TIMEOUT)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    der = tls.getpeercert(binary_form=True)
                    device = device_id_from_certificate(x509.load_der_x509_certificate(der)) if der else "-"
                    tls.sendall(b"hello " + device.encode())
                    self.results.put(("ok", device))
            except (ssl.SSLError, OSError) as exc:
                self.results.put(("error", exc))
            finally:
                conn.close()

    def result(self) -> tuple[str, object]:
        return self.results.get(timeout=TIMEOUT)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(TIMEOUT)
        self.sock.close()
        assert not self.thread.is_alive()


@pytest.fixture
def agent_listener(org: Node) -> Iterator[TlsServer]:
    ctx = agent_listener_context(org.paths.ca_pem, org.paths.server_pem, org.paths.server_key)
    server = TlsServer(ctx)
    yield server
    server.close()


def _attempt(ctx: ssl.SSLContext, port: int, hostname: str = "localhost") -> bytes | Exception:
    """Connect, handshake and read the greeting; return the bytes read or the exception raised."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
            ctx.wrap_socket(raw, server_hostname=hostname) as tls,
        ):
            return tls.recv(200)
    except (ssl.SSLError, OSError) as exc:
        return exc


def _server_error(server: TlsServer) -> str:
    status, detail = server.result()
    assert status == "error", f"server accepted the connection: {detail!r}"
    return str(detail)


# --------------------------------------------------------------------------- agent listener


def test_device_with_org_cert_connects(org: Node, agent_listener: TlsServer) -> None:
    """A client presenting a device cert from the org CA completes mTLS; the server sees its id."""
    ctx = agent_client_context(org.paths.ca_pem, org.device_cert, org.device_key)
    assert _attempt(ctx, agent_listener.port) == b"hello dev-good"
    assert agent_listener.result() == ("ok", "dev-good")


def test_client_verifies_server_by_ip_san(org: Node, agent_listener: TlsServer) -> None:
    """Connecting by 127.0.0.1 works: the server certificate carries that IP SAN."""
    ctx = agent_client_context(org.paths.ca_pem, org.device_cert, org.device_key)
    assert _attempt(ctx, agent_listener.port, hostname="127.0.0.1") == b"hello dev-good"
    assert agent_listener.result() == ("ok", "dev-good")


def test_client_without_cert_rejected(org: Node, agent_listener: TlsServer) -> None:
    """A client that presents no certificate is refused by the agent listener."""
    ctx = agent_client_context(org.paths.ca_pem, None, None)
    got = _attempt(ctx, agent_listener.port)
    assert not (isinstance(got, bytes) and got.startswith(b"hello")), got
    assert "CERTIFICATE" in _server_error(agent_listener).upper()


def test_client_with_other_ca_cert_rejected(org: Node, other_org: Node, agent_listener: TlsServer) -> None:
    """A device cert under another root (same device id, same names) is refused by the agent listener."""
    ctx = agent_client_context(org.paths.ca_pem, other_org.device_cert, other_org.device_key)
    got = _attempt(ctx, agent_listener.port)
    assert not (isinstance(got, bytes) and got.startswith(b"hello")), got
    assert "CERTIFICATE_VERIFY_FAILED" in _server_error(agent_listener)


def test_tls12_client_rejected(org: Node, agent_listener: TlsServer) -> None:
    """A client limited to TLS 1.2 cannot connect, even with a valid device certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # test-only: proving the server refuses the protocol version
    ctx.load_cert_chain(org.device_cert, org.device_key)
    got = _attempt(ctx, agent_listener.port)
    assert isinstance(got, ssl.SSLError), got
    assert "UNSUPPORTED_PROTOCOL" in _server_error(agent_listener)


def test_device_from_another_node_of_the_same_root_connects(org: Node, sibling: Node,
                                                           agent_listener: TlsServer) -> None:
    """Two nodes: a device whose certificate the other node's intermediate issued completes mTLS here
    (its chain leads to the same root)."""
    assert sibling.ca.certificate != org.ca.certificate
    ctx = agent_client_context(org.paths.ca_pem, sibling.device_cert, sibling.device_key)
    assert _attempt(ctx, agent_listener.port) == b"hello dev-sibling"
    assert agent_listener.result() == ("ok", "dev-sibling")


def test_device_without_its_intermediate_rejected(org: Node, agent_listener: TlsServer, tmp_path: Path) -> None:
    """The listener trusts only the root: a device that presents its certificate without the intermediate is refused."""
    cert, key = _device(org.ca, tmp_path, "dev-alone", chain=False)
    got = _attempt(agent_client_context(org.paths.ca_pem, cert, key), agent_listener.port)
    assert not (isinstance(got, bytes) and got.startswith(b"hello")), got
    assert "CERTIFICATE_VERIFY_FAILED" in _server_error(agent_listener)


def test_device_id_that_looks_like_a_host_name_connects(org: Node, agent_listener: TlsServer,
                                                        tmp_path: Path) -> None:
    """A device CN with dots is not matched against the intermediate's DNS name constraints (SANs only)."""
    cert, key = _device(org.ca, tmp_path, "pc.example.org")
    assert _attempt(agent_client_context(org.paths.ca_pem, cert, key), agent_listener.port) == b"hello pc.example.org"
    assert agent_listener.result() == ("ok", "pc.example.org")


# --------------------------------------------------------------------------- agent client context


def test_client_rejects_server_from_other_ca(org: Node, other_org: Node) -> None:
    """The agent refuses a server whose certificate another CA issued."""
    server = TlsServer(console_listener_context(other_org.paths.server_pem, other_org.paths.server_key))
    try:
        got = _attempt(agent_client_context(org.paths.ca_pem, None, None), server.port)
        assert isinstance(got, ssl.SSLCertVerificationError), got
        _server_error(server)
    finally:
        server.close()


def test_client_checks_hostname(org: Node, agent_listener: TlsServer) -> None:
    """The agent refuses an org-CA server certificate that does not name the host it dialled."""
    ctx = agent_client_context(org.paths.ca_pem, org.device_cert, org.device_key)
    got = _attempt(ctx, agent_listener.port, hostname="evil.example")
    assert isinstance(got, ssl.SSLCertVerificationError), got
    assert "mismatch" in str(got).lower()
    _server_error(agent_listener)


def test_contexts_are_tls13_and_trust_only_org_ca(org: Node) -> None:
    """Every factory sets TLS 1.3 minimum; agent contexts trust exactly the org root (not the intermediate)."""
    agent = agent_client_context(org.paths.ca_pem, None, None)
    listener = agent_listener_context(org.paths.ca_pem, org.paths.server_pem, org.paths.server_key)
    console = console_listener_context(org.paths.server_pem, org.paths.server_key)
    for ctx in (agent, listener, console):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert agent.check_hostname and agent.verify_mode == ssl.CERT_REQUIRED
    assert listener.verify_mode == ssl.CERT_REQUIRED
    assert console.verify_mode == ssl.CERT_NONE
    for ctx in (agent, listener):
        cas = ctx.get_ca_certs()
        assert len(cas) == 1 and cas[0]["subject"] == ((("commonName", "Helpline Org TLS Root"),),)


def test_client_context_needs_cert_and_key_together(org: Node) -> None:
    """Giving a device certificate without its key (or vice versa) is a ValueError."""
    with pytest.raises(ValueError):
        agent_client_context(org.paths.ca_pem, org.device_cert, None)
    with pytest.raises(ValueError):
        agent_client_context(org.paths.ca_pem, None, org.device_key)


def test_client_builds_the_server_chain_from_the_root(org: Node) -> None:
    """The agent trusts only the root; it accepts the server because the server sends its intermediate,
    and refuses a server that sends its certificate alone."""
    server = TlsServer(console_listener_context(org.paths.server_pem, org.paths.server_key))
    try:
        assert _attempt(agent_client_context(org.paths.ca_pem, None, None), server.port) == b"hello -"
        assert server.result() == ("ok", "-")
    finally:
        server.close()
    alone = org.paths.directory / "server-alone.pem"
    write_certificate(alone, x509.load_pem_x509_certificate(org.paths.server_pem.read_bytes()))
    server = TlsServer(console_listener_context(alone, org.paths.server_key))
    try:
        got = _attempt(agent_client_context(org.paths.ca_pem, None, None), server.port)
        assert isinstance(got, ssl.SSLCertVerificationError), got
        _server_error(server)
    finally:
        server.close()


def test_server_cert_outside_the_nodes_names_rejected(org: Node, tmp_path: Path) -> None:
    """A node's intermediate that signs a server certificate for a name it was not given (here to impersonate
    another host) gets nothing: the client refuses the chain (name constraints)."""
    key = generate_device_key()
    rogue = org.ca.issue_server_certificate(key.public_key(), ["bank.example"], now=datetime.now(UTC))
    (tmp_path / "rogue.pem").write_bytes(org.ca.chain_pem(rogue))
    write_private_key(tmp_path / "rogue.key", key)
    server = TlsServer(console_listener_context(tmp_path / "rogue.pem", tmp_path / "rogue.key"))
    try:
        got = _attempt(agent_client_context(org.paths.ca_pem, None, None), server.port, hostname="bank.example")
        assert isinstance(got, ssl.SSLCertVerificationError), got
        assert "subtree" in str(got), got
        _server_error(server)
    finally:
        server.close()


# --------------------------------------------------------------------------- pinned CA fetch


class _CaHandler(http.server.BaseHTTPRequestHandler):
    ca_pem: bytes = b""
    seen_headers: list[dict[str, str]] = []

    def do_GET(self) -> None:
        self.seen_headers.append(dict(self.headers.items()))
        if self.path != "/api/v1/enroll/ca.pem":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-pem-file")
        self.send_header("Content-Length", str(len(self.ca_pem)))
        self.end_headers()
        self.wfile.write(self.ca_pem)

    def log_message(self, format: str, *args: object) -> None:
        log.info("ca server: " + format, *args)


@dataclass
class CaServer:
    url: str
    seen_headers: list[dict[str, str]]


@pytest.fixture
def ca_server(org: Node) -> Iterator[CaServer]:
    """An https server (console listener context) serving the org CA at /api/v1/enroll/ca.pem."""
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_CaHandler,), {"ca_pem": org.paths.ca_pem.read_bytes(), "seen_headers": seen})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = console_listener_context(org.paths.server_pem, org.paths.server_key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield CaServer(f"https://127.0.0.1:{httpd.server_address[1]}", seen)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def test_fetch_pinned_ca_returns_matching_ca(org: Node, ca_server: CaServer) -> None:
    """With the root's pin, fetch_pinned_ca returns the root's PEM (through the chain the server presents);
    no credentials are sent."""
    pem = fetch_pinned_ca(ca_server.url, org.ca.fingerprint_sha256, timeout=TIMEOUT)
    assert pem == org.paths.ca_pem.read_bytes()
    assert fingerprint_of_pem(pem) == org.ca.fingerprint_sha256
    assert len(ca_server.seen_headers) == 1
    sent = {k.lower() for k in ca_server.seen_headers[0]}
    assert not sent & {"authorization", "cookie", "x-enrollment-token"}


def test_fetch_pinned_ca_accepts_colon_uppercase_pin(org: Node, ca_server: CaServer) -> None:
    """A pin written AA:BB:… in upper case matches the same CA."""
    fp = org.ca.fingerprint_sha256.upper()
    colons = ":".join(fp[i : i + 2] for i in range(0, len(fp), 2))
    assert fetch_pinned_ca(ca_server.url + "/", colons, timeout=TIMEOUT) == org.paths.ca_pem.read_bytes()


def test_fetch_pinned_ca_rejects_wrong_pin(other_org: Node, ca_server: CaServer) -> None:
    """A CA that does not match the pinned fingerprint raises PinMismatchError."""
    with pytest.raises(PinMismatchError):
        fetch_pinned_ca(ca_server.url, other_org.ca.fingerprint_sha256, timeout=TIMEOUT)


def test_fetch_pinned_ca_http_error(org: Node, ca_server: CaServer) -> None:
    """A non-200 answer raises CertError (not a pin mismatch)."""
    with pytest.raises(CertError, match="HTTP 404") as info:
        fetch_pinned_ca(ca_server.url + "/prefix", org.ca.fingerprint_sha256, timeout=TIMEOUT)
    assert not isinstance(info.value, PinMismatchError)


def test_fetch_pinned_ca_requires_https(org: Node) -> None:
    """Plain http URLs are refused before any connection."""
    with pytest.raises(CertError, match="https"):
        fetch_pinned_ca("http://127.0.0.1:1", org.ca.fingerprint_sha256)


@pytest.mark.parametrize("bad", ["", "abc", "zz" * 32, "ab" * 31, "ab" * 33])
def test_malformed_pin_rejected(bad: str) -> None:
    """Pins that are not 64 hex digits are a ValueError."""
    with pytest.raises(ValueError):
        normalize_fingerprint(bad)


def test_normalize_fingerprint_forms() -> None:
    """Colons, spaces and upper case normalise to 64 lowercase hex digits."""
    plain = "0123456789abcdef" * 4
    spaced = " ".join(plain.upper()[i : i + 2] for i in range(0, 64, 2))
    assert normalize_fingerprint(spaced) == plain
    assert normalize_fingerprint(":".join(plain[i : i + 2] for i in range(0, 64, 2))) == plain


def _session_has_ticket(ctx: ssl.SSLContext, port: int) -> bool:
    """Handshake, read the greeting (after the server's NewSessionTicket messages, if any), say if one came."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.recv(200).startswith(b"hello")
        return tls.session is not None and tls.session.has_ticket


def test_the_agent_listener_issues_no_session_tickets_and_the_console_does(org: Node,
                                                                           agent_listener: TlsServer) -> None:
    """Agents never resume TLS sessions, so the agent listener sends no tickets (each cost ~0.45 ms of the
    node's CPU per connect); the console keeps them for browsers, which do resume."""
    device = agent_client_context(org.paths.ca_pem, org.device_cert, org.device_key)
    assert not _session_has_ticket(device, agent_listener.port)
    console = TlsServer(console_listener_context(org.paths.server_pem, org.paths.server_key))
    try:
        assert _session_has_ticket(agent_client_context(org.paths.ca_pem, None, None), console.port)
    finally:
        console.close()
