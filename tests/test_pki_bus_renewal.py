"""A node's NATS certificate is renewed by the signer with its intermediate (certs/bus_renewal.py).

Real processes throughout: ``helpline certs nats`` makes the bus, ``helpline certs signer bus-ca`` and
``bus-node`` give the signer the bus CA and bind node-a's bus id and key, a real signer serves, and
the node joins with ``--bus``. The last test runs a real nats-server with the generated config (pinned
keys, verify_and_map) and a real server node whose first bus certificate lives 40 s: the node renews it
from the signer, the old one expires, nats-server restarts, and the node is back on the bus only because
its live TLS context now presents the renewed certificate.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from certs.bus_renewal import BusFiles
from certs.nats import BusCA, BusPaths, spki_pin
from certs.node_link import SignerLink, SignerRefused, renew
from certs.pki import (
    CertificateAuthority,
    build_csr,
    certificate_serial_hex,
    load_certificate,
    write_certificate,
    write_private_key,
)
from certs.signer_wire import IntermediateRequest, proof_holds, sign_proof
from tests.harness import running_server, wait_until
from tests.nats_server import NATS_SERVER, stop
from tests.procs import helpline, wait_for_port
from tests.test_nats_secure import SecureNats, secure_nats
from tests.test_pki_delegation import running_signer


def _bus_ca_into(bus_dir: Path) -> Callable[[Path], object]:
    def give(signer_dir: Path) -> object:
        return helpline("certs", "signer", "bus-ca", "--dir", str(signer_dir), "--bus-dir", str(bus_dir),
                        "--passphrase-file", str(signer_dir.parent / "signer-pass"))
    return give


def _join_with_bus(tmp_path: Path, signer: dict[str, Path | str], pki: Path, bus_dir: Path, *,
                   node: str = "node-a", lifetime_s: int = 300, fraction: float = 0.5) -> None:
    """Allow ``node``, bind its bus identity to the key of ``bus_dir/nodes/<node>.pem``, join it with ``--bus``."""
    added = helpline("certs", "signer", "add-node", "--dir", str(signer["dir"]), "--node", node,
                     "--server-name", "localhost", "--lifetime-seconds", str(lifetime_s))
    helpline("certs", "signer", "bus-node", "--dir", str(signer["dir"]), "--node", node,
             "--bus-cert", str(bus_dir / "nodes" / f"{node}.pem"))
    (tmp_path / "token").write_text(added.stdout.splitlines()[-1])
    helpline("certs", "join", "--dir", str(pki), "--signer", str(signer["url"]), "--node", node, "--bus",
             "--root-cert", str(Path(signer["root"]) / "ca.pem"), "--token-file", str(tmp_path / "token"),
             "--renew-fraction", str(fraction))


def _files(bus_dir: Path, node: str = "node-a") -> BusFiles:
    return BusFiles(bus_dir / "ca.pem", bus_dir / "nodes" / f"{node}.pem", bus_dir / "nodes" / f"{node}.key")


@contextlib.contextmanager
def _bus_dir_only(tmp_path: Path) -> Iterator[Path]:
    """``helpline certs nats`` for node-a and node-b, without starting nats-server."""
    bus = tmp_path / "bus"
    helpline("certs", "nats", "--dir", str(bus), "--server-name", "localhost", "--listen", "127.0.0.1:4222",
             "--store-dir", str(tmp_path / "js"), "--install-dir", str(bus / "server"), "--node", "node-a",
             "--node", "node-b")
    yield bus


def test_the_proof_covers_the_bus_csr_and_a_plain_request_names_no_new_field() -> None:
    """A captured renewal cannot have its bus CSR swapped for another key's; a node not asking for a bus
    certificate sends exactly what older signers accept (they refuse unknown fields)."""
    key, bus_key, other = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    csr, bus_csr, swapped = build_csr(key).decode(), build_csr(bus_key).decode(), build_csr(other).decode()
    ca = BusCA.create(now=datetime.now(UTC))
    cert = ca.issue_node(key.public_key(), "node-a", now=datetime.now(UTC))  # any certificate for ``key``
    signature = sign_proof(key, csr, bus_csr)
    assert proof_holds(cert, csr, signature, bus_csr)
    assert not proof_holds(cert, csr, signature, swapped)
    assert not proof_holds(cert, csr, signature)  # the bus CSR dropped: not the signed message either
    assert not proof_holds(cert, csr, sign_proof(key, csr), bus_csr)  # an old proof does not cover a bus CSR
    assert set(json.loads(msgspec.json.encode(IntermediateRequest(node="n", csr=csr)))) == {"node", "csr"}


async def test_the_signer_renews_the_bound_bus_key_only_and_audits_it(tmp_path: Path) -> None:
    """With the bus CA on the signer and node-a's bus key bound, a renewal returns a bus certificate for the same
    key and NATS user, of the intermediate's lifetime, written over the node's; a CSR for another key, or from a
    node with no bus binding, is refused and nothing is issued; the trail records the bus serial."""
    with _bus_dir_only(tmp_path) as bus_dir, running_signer(tmp_path, _bus_ca_into(bus_dir)) as signer:
        assert (Path(signer["dir"]) / "bus-ca.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
        pki = tmp_path / "node" / "pki"
        _join_with_bus(tmp_path, signer, pki, bus_dir, lifetime_s=600)
        assert json.loads((pki / "signer.json").read_text())["bus"] is True
        files = _files(bus_dir)
        before = load_certificate(files.cert)
        assert before.not_valid_after_utc - datetime.now(UTC) > timedelta(days=59)  # 'certs nats': 60 days
        current = CertificateAuthority.load(pki)
        link = SignerLink.load(pki)
        assert link is not None and link.bus
        renewed = await renew(pki, link, current=current, now=datetime.now(UTC), bus=files)
        after = load_certificate(files.cert)
        assert after.serial_number != before.serial_number
        assert after.public_key() == before.public_key() and spki_pin(after) == spki_pin(before)  # the pin holds
        assert after.subject == before.subject  # the same NATS user
        life = after.not_valid_after_utc - datetime.now(UTC)
        assert timedelta(seconds=500) < life <= timedelta(seconds=601)
        assert after.not_valid_after_utc <= renewed.not_after + timedelta(seconds=1)
        after.verify_directly_issued_by(load_certificate(files.ca))

        # A bus CSR for another key (a thief's, or a node's re-keyed bus key not bound yet): refused, nothing issued.
        thief = tmp_path / "thief.key"
        write_private_key(thief, ec.generate_private_key(ec.SECP256R1()))
        with pytest.raises(SignerRefused, match="not the one bound"):
            await renew(pki, link, current=renewed, now=datetime.now(UTC),
                        bus=BusFiles(files.ca, files.cert, thief))
        assert load_certificate(files.cert).serial_number == after.serial_number
        assert CertificateAuthority.load(pki).certificate == renewed.certificate

        # node-b is allowed but its bus identity is not bound: asking for a bus certificate is refused.
        added = helpline("certs", "signer", "add-node", "--dir", str(signer["dir"]), "--node", "node-b",
                         "--server-name", "localhost", "--lifetime-seconds", "600")
        (tmp_path / "token-b").write_text(added.stdout.splitlines()[-1])
        pki_b = tmp_path / "b" / "pki"
        helpline("certs", "join", "--dir", str(pki_b), "--signer", str(signer["url"]), "--node", "node-b", "--bus",
                 "--root-cert", str(Path(signer["root"]) / "ca.pem"), "--token-file", str(tmp_path / "token-b"))
        link_b = SignerLink.load(pki_b)
        assert link_b is not None
        b_before = load_certificate(_files(bus_dir, "node-b").cert).serial_number
        with pytest.raises(SignerRefused, match="no bus identity"):
            await renew(pki_b, link_b, current=CertificateAuthority.load(pki_b), now=datetime.now(UTC),
                        bus=_files(bus_dir, "node-b"))
        assert load_certificate(_files(bus_dir, "node-b").cert).serial_number == b_before

        trail = helpline("certs", "signer", "audit", "--dir", str(signer["dir"]), "--verify").stdout
        assert "bus_ca_added" in trail and "bus_bound" in trail
        assert f"bus_serial={certificate_serial_hex(after)}" in trail
        assert "bus_not_allowed" in trail
        listed = helpline("certs", "signer", "nodes", "--dir", str(signer["dir"])).stdout
        assert "bus node-a" in listed


async def test_a_node_renews_its_bus_certificate_and_reconnects_with_it_after_the_old_one_expired(
        tmp_path: Path) -> None:
    """A real node on a real mutual-TLS nats-server, its first bus certificate living 40 s: the node renews it from
    the signer by itself (same key: nats-server's pin still holds), the old one expires, nats-server restarts, and
    the node is back on the bus — which it can only be by presenting the renewed certificate."""
    from tests import pg_store
    from tests.test_multinode_bus import _pg_url

    _pg_url()
    with secure_nats(tmp_path) as bus, running_signer(tmp_path, _bus_ca_into(bus.directory)) as signer:
        files = _files(bus.directory)
        short = BusCA.load(BusPaths(bus.directory)).issue_node(files.private_key().public_key(), "node-a",
                                                               now=datetime.now(UTC), lifetime=timedelta(seconds=40))
        write_certificate(files.cert, short)  # same key: the pin in nats-server's config still matches
        first_end = short.not_valid_after_utc
        data = tmp_path / "srv"
        _join_with_bus(tmp_path, signer, data / "pki", bus.directory, lifetime_s=300, fraction=0.5)
        config = bus.node_config("node-a", database_url=pg_store.url_for(tmp_path / "shared"))
        async with running_server(data, **config) as node:
            assert node.bus is not None and node.bus.client.is_connected
            await wait_until(lambda: load_certificate(files.cert).serial_number != short.serial_number, timeout=90,
                             what="the node renewing its bus certificate from the signer")
            renewed = load_certificate(files.cert)
            assert renewed.not_valid_after_utc > first_end + timedelta(seconds=200)
            await wait_until(lambda: datetime.now(UTC) > first_end + timedelta(seconds=1), timeout=60,
                             interval=0.5, what="the first bus certificate's end")
            client = node.bus.client
            restarted = _restart(bus, tmp_path)
            try:
                await wait_until(lambda: client.is_connected and client.stats["reconnects"] > 0, timeout=60,
                                 what="the node back on the restarted bus with its renewed certificate")
                await client.flush(timeout=10)
            finally:
                stop(restarted)


def _restart(bus: SecureNats, tmp_path: Path) -> subprocess.Popen[bytes]:
    """Stop nats-server by PID and start it again on the same config (and port)."""
    stop(bus.proc)
    port = int(bus.url.rsplit(":", 1)[1])
    log = (tmp_path / "nats-2.log").open("wb")
    proc = subprocess.Popen([NATS_SERVER, "-c", str(bus.directory / "server" / "nats-server.conf")], stdout=log,
                            stderr=subprocess.STDOUT)
    log.close()
    wait_for_port(port, proc, timeout=30)
    return proc

