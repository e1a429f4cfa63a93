"""``helpline demo`` — the whole system on this machine, in a data directory of its own.

Certificates, the server, one enrolled local agent, the console account ``admin`` and — on a
machine without a desktop — an Xvfb with a sample window for remote sessions
(:mod:`.demo_display`). The agent gets a configuration file written on every start
(``DATA/agent.toml``): the Xvfb's display and ``session_user = "demo"``, so the consent prompt
has a display and a user to ask. Every process the demo starts is its child, stopped by PID on
Ctrl-C, on SIGTERM, or when any of them exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from . import demo_display

#: How long each child gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("demo", help="run server + one enrolled agent locally",
                            description="Create certificates, start the server and one local agent enrolled with "
                            "a fresh token, all in --data (default ./demo-data), and print how to log in and "
                            "open a remote session. Without a desktop it starts Xvfb with a sample window. "
                            "Ctrl-C or SIGTERM stops everything.")
    parser.add_argument("--data", type=Path, default=Path("demo-data"), help="demo data directory")
    parser.add_argument("--agent-port", type=int, default=8443)
    parser.add_argument("--console-port", type=int, default=8444)
    parser.add_argument("--exit-after-start", action="store_true", help="start, print, stop (for smoke tests)")
    parser.set_defaults(handler=_demo)


def wait_for_port(port: int, *, deadline_s: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on port {port} after {deadline_s:.0f}s")


def write_agent_config(path: Path, xvfb_display: str | None) -> Path:
    """The demo agent's ``[agent]`` table: on the demo's Xvfb, its display and the user counted as sitting at it."""
    lines = ["# Written by `helpline demo` on every start.", "[agent]"]
    if xvfb_display is not None:
        lines += [f"display = {json.dumps(xvfb_display)}  # the demo's Xvfb",
                  f"session_user = {json.dumps(demo_display.SESSION_USER)}  # nobody logs in to an Xvfb: "
                  "count this user as logged in there, so the consent prompt is shown"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _demo(args: argparse.Namespace) -> int:
    from agent.enroll import enroll
    from agent.state import AgentState
    from certs.pki import CertificateAuthority, init_pki
    from server.config import ServerConfig
    from server.enrollment import create_token

    from . import demo_console
    from .common import with_database

    # From here on SIGTERM unwinds like Ctrl-C, so the finally block below stops every child.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    data: Path = args.data.resolve()
    pki_dir = data / "pki"
    step = _Progress()
    children: list[subprocess.Popen[bytes]] = []
    try:
        if not (pki_dir / "ca.pem").exists():
            step("creating the org TLS root (its key discarded: a demo), this server's intermediate and certificate")
            init_pki(pki_dir, ["localhost", "127.0.0.1"])
        ca = CertificateAuthority.load(pki_dir)
        if ca.not_after <= datetime.now(UTC):
            print(f"helpline: the demo's intermediate in {pki_dir} expired at {ca.not_after:%Y-%m-%d}; remove {data} "
                  "to start a new demo", file=sys.stderr)
            return 1
        logs = data / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        config = ServerConfig(data_dir=data, host="127.0.0.1", agent_port=args.agent_port,
                              console_port=args.console_port, public_host="localhost")
        step(f"starting server (agents :{args.agent_port}, console :{args.console_port}); log in {logs}/server.log")
        server = _spawn(["server", "--data", str(data), "--host", "127.0.0.1", "--agent-port", str(args.agent_port),
                         "--console-port", str(args.console_port)], logs / "server.log")
        children.append(server)
        wait_for_port(args.console_port, proc=server)
        wait_for_port(args.agent_port, proc=server)
        state = AgentState(data / "agent")
        if not state.is_enrolled():
            step("creating a one-time enrollment token for group 'demo' and enrolling the local agent")
            created = with_database(config, lambda db: create_token(db, group="demo", ttl_s=600, uses=1,
                                                                    actor="demo"))
            enroll(config.console_url, created.token, ca.fingerprint_sha256, state)
        xvfb_display = demo_display.start_display(data, children, step)
        agent_config = write_agent_config(data / "agent.toml", xvfb_display)
        step(f"starting agent {state.device_id} (config {agent_config}); log in {logs}/agent.log")
        children.append(_spawn(["agent", "run", "--state", str(state.directory), "--config", str(agent_config)],
                               logs / "agent.log"))
        step(f"creating console account '{demo_console.ADMIN_NAME}' (admin) with one-time credentials")
        credentials = demo_console.create_admin(config)
        demo_console.print_first_steps(demo_console.DemoInfo(
            config=config, credentials=credentials, device_id=state.device_id, hostname=socket.gethostname(),
            ca_fingerprint=ca.fingerprint_sha256, xvfb_display=xvfb_display,
            desktop_display=None if xvfb_display else os.environ.get("DISPLAY")))
        if args.exit_after_start:
            return 0
        while all(c.poll() is None for c in children):
            time.sleep(0.5)  # the demo's idle loop; signals interrupt it
        dead = next(c for c in children if c.poll() is not None)
        print(f"helpline: a demo process (PID {dead.pid}) exited with status {dead.returncode}; stopping the "
              f"others; see {logs}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping demo", flush=True)
        return 0
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_children(children)


def stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    """Stop children newest first (the agent before its display, the server last): SIGTERM, wait, SIGKILL."""
    for child in reversed(children):
        if child.poll() is None:
            child.terminate()
        try:
            child.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _raise_interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "helpline", *argv], stdout=log, stderr=subprocess.STDOUT)


class _Progress:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, text: str) -> None:
        self.n += 1
        print(f"[{self.n}] {text}", flush=True)
