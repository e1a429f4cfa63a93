"""``helpline demo`` — the whole system on this machine, in a data directory of its own."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from agent.enroll import enroll
from agent.state import AgentState
from certs.pki import CertificateAuthority, init_pki
from server.config import ServerConfig
from server.enrollment import create_token

from .common import with_database

#: Extra demo steps: modules with an optional ``before_agent(data, children, step)`` (e.g. start a
#: virtual display the agent inherits) and ``run(config, data, children, step)`` after it starts.
DEMO_STEPS: list[str] = ["demo_console"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("demo", help="run server + one enrolled agent locally",
                            description="Create certificates, start the server and one local agent enrolled with "
                            "a fresh token, all in --data (default ./demo-data). Ctrl-C stops everything.")
    parser.add_argument("--data", type=Path, default=Path("demo-data"), help="demo data directory")
    parser.add_argument("--agent-port", type=int, default=8443)
    parser.add_argument("--console-port", type=int, default=8444)
    parser.add_argument("--exit-after-start", action="store_true", help="start, print, stop (for smoke tests)")
    parser.set_defaults(handler=_demo)


def wait_for_port(port: int, *, deadline_s: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on port {port} after {deadline_s:.0f}s")


def _demo(args: argparse.Namespace) -> int:
    data: Path = args.data.resolve()
    pki_dir = data / "pki"
    step = _Progress()
    if not (pki_dir / "ca.pem").exists():
        step("creating org CA, server certificate and grant key")
        init_pki(pki_dir, ["localhost", "127.0.0.1"])
    ca = CertificateAuthority.load(pki_dir)
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    config = ServerConfig(data_dir=data, host="127.0.0.1", agent_port=args.agent_port,
                          console_port=args.console_port, public_host="localhost")
    children: list[subprocess.Popen[bytes]] = []

    def stop_all(*_: object) -> None:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in reversed(children):
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()

    try:
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
        steps = [importlib.import_module(f"helpline.commands.{name}") for name in DEMO_STEPS]
        for module in steps:
            if hasattr(module, "before_agent"):
                module.before_agent(data, children, step)
        step(f"starting agent {state.device_id}; log in {logs}/agent.log")
        children.append(_spawn(["agent", "run", "--state", str(state.directory)], logs / "agent.log"))
        for module in steps:
            module.run(config, data, children, step)
        print()
        print("Helpline demo is running:")
        print(f"  console / API     {config.console_url}")
        print(f"  agent listener    wss://localhost:{args.agent_port}/agent (mutual TLS)")
        print(f"  device            {state.device_id} (group demo)")
        print(f"  CA fingerprint    {ca.fingerprint_sha256}")
        print(f"  data              {data}")
        print(f"  try               helpline admin device list --data {data}")
        print("Press Ctrl-C to stop.")
        sys.stdout.flush()
        if args.exit_after_start:
            return 0
        signal.signal(signal.SIGTERM, _raise_interrupt)
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
        dead = [c for c in children if c.poll() is not None]
        print(f"helpline: a demo process exited (status {dead[0].returncode}); see {logs}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping demo")
        return 0
    finally:
        stop_all()


def _raise_interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    return subprocess.Popen([sys.executable, "-m", "helpline", *argv], stdout=log, stderr=subprocess.STDOUT)


class _Progress:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, text: str) -> None:
        self.n += 1
        print(f"[{self.n}] {text}", flush=True)
