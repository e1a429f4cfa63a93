"""Remote shell figures: keystroke-to-echo round trip through the relay, and `cat` of a big file.

Real server (TLS on both listeners, relay, asciicast recording on), real agent (attended session,
the consent answered by a scripted UI), a real pty running ``sh`` as ``nobody``, the reference
shell viewer (:class:`agent.shell.client.ShellViewer`) as the technician's browser. It reports:

* **round trip**: one key sent (``0xC1`` + byte) until the pty's echo of it is back at the viewer,
  ``--keys`` times one after the other (the kernel's line discipline echoes: this is the path
  viewer → relay → agent → pty → agent → relay → viewer, no shell work); p50/p95/max;
* **throughput**: ``cat`` of a ``--size-mb`` text file (base64 lines) until a marker after it
  arrives, in MB/s of terminal output received by the viewer.

Everything runs in this one process on one event loop (server, agent, viewer), so the figures are
those of a loaded single core: a lower bound for separate machines. Xvfb is killed by PID at the end.

    .venv/bin/python benchmarks/shell.py                 # 200 keys, 50 MB
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.config import AgentConfig  # noqa: E402
from agent.consent.scripted import ScriptedConsentUI  # noqa: E402
from agent.shell.client import ShellViewer  # noqa: E402
from certs import tls  # noqa: E402
from protocol import shell as sh  # noqa: E402
from tests.harness import console_url, enroll_agent, running_agent, running_server  # noqa: E402
from tests.test_session_helpers import api, configure_agent, install_test_auth  # noqa: E402
from tests.xvfb import start_xvfb  # noqa: E402

USER = "nobody"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _text_file(path: Path, size: int) -> None:
    """``size`` bytes of base64 lines (76 characters + newline), readable by the shell's user."""
    with path.open("wb") as out:
        written = 0
        while written < size:
            block = base64.encodebytes(os.urandom(57 * 1000))
            out.write(block[: size - written])
            written += len(block[: size - written])
    path.chmod(0o644)


async def round_trips(viewer: ShellViewer, keys: int) -> list[float]:
    times = []
    for i in range(keys):
        char = "abcdefghijklmnopqrstuvwxyz"[i % 26]
        before = len(viewer.output)
        started = time.perf_counter()
        await viewer.keys(char)
        await viewer.until(lambda: len(viewer.output) > before, 10, "the echo")  # noqa: B023 - awaited here
        times.append(time.perf_counter() - started)
        assert char.encode() in viewer.output[before:], viewer.output[before:]
        if i % 100 == 99:  # keep the line short: kill it (Ctrl-U; the pty erases each character with "\b \b")
            await viewer.keys("\x15")
            await viewer.until(lambda: viewer.output.endswith(b"\x08 \x08" * 100), 10, "the line killed")
    if keys % 100:
        await viewer.keys("\x15")
        await viewer.until(lambda: viewer.output.endswith(b"\x08 \x08" * (keys % 100)), 10, "the line killed")
    return times


async def run(size_mb: int, keys: int) -> None:
    size = size_mb * 1_000_000
    xvfb = start_xvfb(1024, 768)
    try:
        with tempfile.TemporaryDirectory(prefix="helpline-shell-") as tmp_name:
            tmp = Path(tmp_name)
            tmp.chmod(0o755)
            big = tmp / "big.txt"
            _text_file(big, size)
            policy = tmp / "policy.toml"
            policy.write_text("allow_shell = true\n")
            async with running_server(tmp / "srv", session_recording=True) as server:
                install_test_auth(server)
                state = await enroll_agent(server, tmp / "agent")
                config = AgentConfig(state_dir=tmp / "agent", backoff_cap_s=1.0, policy_file=policy)
                ui = ScriptedConsentUI([True])
                async with running_agent(state, config,
                                         setup=configure_agent(xvfb.display, ui, shell_user=USER)) as agent:
                    await asyncio.wait_for(agent.client.ready.wait(), 10)
                    status, body = await api(server, "POST", f"/api/v1/devices/{state.device_id}/sessions", "ann",
                                             {"mode": "control", "reason": "shell benchmark"})
                    assert status == 201, body
                    url = f"wss://localhost:{server.console_port}/api/v1/sessions/{body['session_id']}/stream"
                    ctx = tls.agent_client_context(server.pki.ca_pem, None, None)
                    async with ShellViewer(url, ssl_context=ctx, headers={"Origin": console_url(server),
                                                                          "X-Test-User": "ann"}) as viewer:
                        await viewer.wait_for(lambda v: v.caps is not None, 30)
                        await viewer.shell_send(sh.Open(cols=120, rows=40))
                        await viewer.until(lambda: bool(viewer.of(sh.Opened)), 30, "shell.opened")
                        await viewer.keys("PS1='$ '; echo READY-$((1+1))\r")
                        await viewer.until(lambda: b"READY-2" in viewer.output, 30, "the prompt")
                        times = await round_trips(viewer, keys)
                        print(f"keystroke → echo through the relay, {keys} keys: p50 {_pct(times, 0.5):.1f} ms, "
                              f"p95 {_pct(times, 0.95):.1f} ms, max {max(times) * 1000:.1f} ms", flush=True)
                        start_len, start_messages = len(viewer.output), len(viewer.output_arrivals)
                        started = time.perf_counter()
                        await viewer.keys(f"cat {big}; echo END-$((40+2))\r")
                        await viewer.until(lambda: b"END-42\r\n" in viewer.output[-64:], 600, "the end of cat")
                        elapsed = time.perf_counter() - started
                        received = len(viewer.output) - start_len
                        if received < size:
                            print(f"cat fell short: {bytes(viewer.output[start_len:start_len + 300])!r}")
                        messages = len(viewer.output_arrivals) - start_messages
                        print(f"cat of a {size_mb} MB text file: {received / 1e6:.1f} MB of terminal output in "
                              f"{elapsed:.2f} s = {received / elapsed / 1e6:.1f} MB/s, in {messages} messages of "
                              f"{received / max(1, messages) / 1024:.1f} KiB on average", flush=True)
                        await viewer.keys("exit\r")
                        await viewer.until(lambda: bool(viewer.of(sh.Exit)), 30, "shell.exit")
    finally:
        xvfb.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--keys", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.size_mb, args.keys))


if __name__ == "__main__":
    main()
