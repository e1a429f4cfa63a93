"""File-transfer throughput through the relay, next to raw TLS, and the screen's latency while a transfer runs.

Real server (TLS on both listeners, relay), real agent (attended session, the consent answered by a
scripted UI so nothing waits for a person), the reference viewer as the technician, a 1024x768 Xvfb
with the Tk probe window of the screen tests. It reports:

* **transfer**: a ``--size-mb`` file (default 200) sent technician → device through the relay
  (chunks of 128 KiB, the agent's window of 16, SHA-256 checked at the end), in MB/s;
* **raw TLS**: the same bytes in the same message size over one TLS 1.3 websocket to a sink on
  this machine (one hop, no relay, no disk) — the ceiling of one hop of the path;
* **screen latency**: from a colour change of a 64x64 probe on the device (applied by the Tk app)
  until the viewer's framebuffer shows it, ``--changes`` times idle and again while the transfer
  runs; p50/p95 of each, and whether the transfer keeps p95 within 2x idle.

Everything runs in this one process on one event loop (server, agent, viewer), so the figures are
those of a loaded single core: a lower bound for separate machines. Every process started
(Xvfb, the Tk app) is killed by PID at the end.

    .venv/bin/python benchmarks/transfer.py              # 200 MB
    .venv/bin/python benchmarks/transfer.py --size-mb 50 --changes 20
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import websockets  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from agent.config import AgentConfig  # noqa: E402
from agent.consent.scripted import ScriptedConsentUI  # noqa: E402
from agent.toolkit.session import CHUNK  # noqa: E402
from agent.viewer import Viewer  # noqa: E402
from protocol import toolkit as tk  # noqa: E402
from tests.harness import enroll_agent, running_agent, running_server  # noqa: E402
from tests.test_screen_support import tk_app  # noqa: E402
from tests.test_session_helpers import api, configure_agent, install_test_auth, viewer_for  # noqa: E402
from tests.xvfb import start_xvfb  # noqa: E402

PROBE = (640, 0, 64, 64)
COLOURS = ("#ff2020", "#20ff20", "#2020ff", "#ffff20")


def _self_signed(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throw-away P-256 certificate for localhost: (server context, client context), TLS 1.3 only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "raw.pem", directory / "raw.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    return server, client


async def raw_tls_mb_s(size: int, directory: Path) -> float:
    """Bytes in CHUNK-sized binary messages over one local TLS websocket into a sink that counts them."""
    server_ctx, client_ctx = _self_signed(directory)
    done = asyncio.get_running_loop().create_future()

    async def sink(ws: websockets.ServerConnection) -> None:
        got = 0
        async for message in ws:
            got += len(message)
            if got >= size:
                await ws.send("done")
                done.set_result(got)

    async with websockets.serve(sink, "localhost", 0, ssl=server_ctx, max_size=2 * CHUNK, compression=None) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        block = os.urandom(CHUNK)
        async with websockets.connect(f"wss://localhost:{port}/", ssl=client_ctx, max_size=2 * CHUNK,
                                      compression=None) as ws:
            started = time.perf_counter()
            sent = 0
            while sent < size:
                await ws.send(block[: min(CHUNK, size - sent)])
                sent += min(CHUNK, size - sent)
            await ws.recv()
            elapsed = time.perf_counter() - started
    return size / elapsed / 1e6


async def probe_latencies(viewer: Viewer, app: object, count: int) -> list[float]:
    """Seconds from each probe colour change on the device until the viewer shows it."""
    x, y, w, h = PROBE
    out: list[float] = []
    for i in range(count):
        colour = COLOURS[i % len(COLOURS)]
        bgr = np.array([int(colour[5:7], 16), int(colour[3:5], 16), int(colour[1:3], 16)])
        await app.command(f"fill {colour}")  # type: ignore[attr-defined]
        changed = time.perf_counter()

        def shown(v: Viewer, want: np.ndarray = bgr) -> bool:  # type: ignore[type-arg]
            return bool(np.abs(v.region(x, y, w, h).astype(int) - want).max() < 40)

        await viewer.wait_for(shown, 20)
        out.append(time.perf_counter() - changed)
        await asyncio.sleep(0.05)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run(size_mb: int, changes: int) -> None:
    size = size_mb * 1_000_000
    xvfb = start_xvfb(1024, 768)
    try:
        with tempfile.TemporaryDirectory(prefix="helpline-transfer-") as tmp_name:
            tmp = Path(tmp_name)
            payload = tmp / "payload.bin"
            with payload.open("wb") as out:
                for _ in range(size // 1_000_000):
                    out.write(os.urandom(1_000_000))
            os.environ["XDG_DOWNLOAD_DIR"] = str(tmp / "Downloads")
            raw = await raw_tls_mb_s(size, tmp)
            print(f"raw TLS websocket, one hop, {size_mb} MB: {raw:.1f} MB/s", flush=True)
            async with running_server(tmp / "srv") as server:
                install_test_auth(server)
                state = await enroll_agent(server, tmp / "agent")
                config = AgentConfig(state_dir=tmp / "agent", backoff_cap_s=1.0,
                                     policy_file=_policy(tmp, size_mb))
                ui = ScriptedConsentUI([True])
                async with running_agent(state, config, setup=configure_agent(xvfb.display, ui)) as agent, \
                        tk_app(xvfb.display) as app:
                    await asyncio.wait_for(agent.client.ready.wait(), 10)
                    status, body = await api(server, "POST", f"/api/v1/devices/{state.device_id}/sessions", "ann",
                                             {"mode": "view", "reason": "transfer benchmark"})
                    assert status == 201, body
                    async with viewer_for(server, str(body["session_id"])) as viewer:
                        await viewer.wait_for(lambda v: v.caps is not None and v.stats.updates >= 1, 30)
                        idle = await probe_latencies(viewer, app, changes)
                        started = time.perf_counter()
                        transfer = asyncio.ensure_future(viewer.send_file(str(payload), timeout=600))
                        await asyncio.sleep(0.5)
                        busy = await probe_latencies(viewer, app, changes)
                        done = await transfer
                        elapsed = time.perf_counter() - started
                    assert isinstance(done, tk.FileDone), done
                    print(f"transfer through the relay, {size_mb} MB (SHA-256 checked): {size / elapsed / 1e6:.1f} MB/s"
                          f" ({size / elapsed / 1e6 / raw * 100:.0f} % of raw one-hop TLS)")
                    print(f"screen latency idle:            p50 {_pct(idle, 0.5):.0f} ms, p95 {_pct(idle, 0.95):.0f} ms")
                    print(f"screen latency during transfer: p50 {_pct(busy, 0.5):.0f} ms, p95 {_pct(busy, 0.95):.0f} ms"
                          f" (median of the transfer's share: {statistics.median(busy) * 1000:.0f} ms)")
                    ratio = _pct(busy, 0.95) / max(_pct(idle, 0.95), 1e-6)
                    print(f"p95 during / idle = {ratio:.2f} ({'within' if ratio <= 2 else 'OVER'} the 2x budget)")
    finally:
        xvfb.stop()


def _policy(tmp: Path, size_mb: int) -> Path:
    path = tmp / "policy.toml"
    path.write_text(f"max_file_mb = {max(1024, size_mb * 2)}\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--changes", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(run(args.size_mb, args.changes))


if __name__ == "__main__":
    main()
