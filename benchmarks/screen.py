"""Screen-pipeline benchmark on a 1920x1080 Xvfb.

Direct mode (default) runs the agent side (``run_screen_session`` behind a plain
``websockets.serve``) in a subprocess so its CPU time is measured alone, connects the
reference viewer, and plays five workloads: idle, typing (10 keys/s flipping a 64x64
probe), pointer (60 mouse moves/s over a still screen), full-screen motion (ffplay
testsrc2) and video-like motion (testsrc2 with a rotating hue).

``--via-server`` takes the path a real overnight session takes: a real ``helpline server``
and a real ``helpline agent run`` enrolled with the org root's fingerprint (both subprocesses),
a technician account with an API token, and an unattended grant for this device that two
approvers of a throw-away org root signed (made here, in this process, as ``helpline trust``
and ``helpline approve`` would); every workload is a fresh session (``POST
/api/v1/devices/{id}/sessions`` with the grant document, then the technician's signature over
the device's challenge) watched through the console stream URL. It reports agent and relay (server) CPU, and runs the typing workload on the
direct path too, to give the latency the relay adds. Every process started here is
killed by PID at the end.

    .venv/bin/python benchmarks/screen.py            # all workloads, direct
    .venv/bin/python benchmarks/screen.py --only typing --seconds 5
    .venv/bin/python benchmarks/screen.py --via-server --peer x11vnc --only video --rounds 5   # CPU, pair by pair
    .venv/bin/python benchmarks/screen.py --via-server   # through the relay
    .venv/bin/python benchmarks/screen.py --url wss://…/stream --agent-pid N   # an existing session
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpline.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from agent.viewer import Viewer  # noqa: E402
from benchmarks.rfb import RfbViewer  # noqa: E402
from benchmarks.testsrc import FrameTracker, player_source, psnr, psnr_against_source  # noqa: E402
from certs import tls  # noqa: E402
from tests.test_screen_support import mouse_location  # noqa: E402
from tests.xvfb import XvfbHandle, start_xvfb  # noqa: E402

WIDTH, HEIGHT = 1920, 1080
PROBE = (110, 110, 64, 64)  # x, y, w, h of the probe square on screen

TK_PROBE = r"""
import sys, tkinter as tk
root = tk.Tk()
root.geometry("400x300+100+100")
c = tk.Canvas(root, width=400, height=300, highlightthickness=0, bg="#808080")
c.place(x=0, y=0)
c.create_text(100, 150, text="typing probe", anchor="nw", font=("Helvetica", 16))
probe = c.create_rectangle(10, 10, 74, 74, fill="#000000", outline="")
state = {"white": False}
def on_key(event):
    state["white"] = not state["white"]
    c.itemconfigure(probe, fill="#ffffff" if state["white"] else "#000000")
    root.update_idletasks()
root.bind("<KeyPress>", on_key)
def ready():
    root.focus_force()
    root.update()
    print("ready", flush=True)
root.after(100, ready)
root.mainloop()
"""


@dataclass
class Result:
    name: str
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Whose figures: "helpline" or the peer ("x11vnc").
    system: str = "helpline"
    #: Which of ``--rounds`` it came from (0-based).
    round: int = 0


# --- agent subprocess ------------------------------------------------------------------


async def agent_main(display: str, mode: str) -> None:
    """The agent side: one screen session per websocket connection."""
    import websockets

    from agent.screen import run_screen_session

    async def handler(ws: Any) -> None:
        stats = await run_screen_session(ws, mode=mode, display=display)  # type: ignore[arg-type]
        print(json.dumps({"session": stats.__dict__}), flush=True)

    # No permessage-deflate, as on the real tunnel (agent/sessions.py): deflating JPEG costs
    # the agent CPU (7 % of a motion session's samples here) for nothing.
    async with websockets.serve(handler, "127.0.0.1", 0, max_size=1 << 20, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(json.dumps({"port": port}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent goes


# --- process helpers --------------------------------------------------------------------


def kill(proc: subprocess.Popen[Any]) -> None:
    """Stop one child by PID: SIGTERM, then SIGKILL if it does not exit."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


@contextlib.contextmanager
def spawn(argv: list[str], env: dict[str, str], **kwargs: Any) -> Iterator[subprocess.Popen[Any]]:
    proc = subprocess.Popen(argv, env=env, **kwargs)
    try:
        yield proc
    finally:
        kill(proc)


def read_line(proc: subprocess.Popen[str], predicate: Callable[[str], bool], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process {proc.pid} exited before printing the expected line")
        if predicate(line.strip()):
            return line.strip()
    raise TimeoutError("no matching line")


class CpuMeter:
    """CPU seconds of one process between start() and percent(), as % of one core."""

    def __init__(self, pid: int | None) -> None:
        self.proc = psutil.Process(pid) if pid else None
        self.t0 = self.c0 = 0.0

    def _cpu(self) -> float:
        assert self.proc is not None
        times = self.proc.cpu_times()
        return float(times.user + times.system)

    def start(self) -> None:
        if self.proc:
            self.t0, self.c0 = time.monotonic(), self._cpu()

    def percent(self) -> float:
        if not self.proc:
            return float("nan")
        return 100 * (self._cpu() - self.c0) / (time.monotonic() - self.t0)


class Meters:
    """CPU meters of the measured processes (``agent``, and ``relay`` via the server)."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self.meters = {name: CpuMeter(pid) for name, pid in pids.items()}

    def start(self) -> None:
        for meter in self.meters.values():
            meter.start()

    def figures(self) -> dict[str, float]:
        return {f"{name}_cpu_pct": meter.percent() for name, meter in self.meters.items()}


def load_figures() -> dict[str, float]:
    """Machine load when a figure is taken (other work on the box skews CPU and latency)."""
    one, five, _ = os.getloadavg()
    return {"load1": one, "load5": five}


async def wait_cpu_quiet(pid: int, below_pct: float = 5.0, timeout: float = 60.0) -> None:
    """Wait until ``pid`` uses under ``below_pct`` of a core for a second (the agent's first inventory is done)."""
    meter = CpuMeter(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meter.start()
        await asyncio.sleep(1.0)  # measuring interval, not synchronization
        if meter.percent() < below_pct:
            return
    print(f"warning: process {pid} never went quiet", file=sys.stderr)


# --- workloads --------------------------------------------------------------------------

#: Opens one viewer on a fresh session (direct websocket or a relayed console stream).
Connect = Callable[[], contextlib.AbstractAsyncContextManager[Viewer]]


def received_more(before: int) -> Callable[[Viewer], bool]:
    return lambda v: v.stats.bytes_received > before


async def settle(viewer: Viewer, quiet_s: float = 0.6, timeout: float = 15) -> None:
    """Wait until no update arrived for ``quiet_s`` (first frame and refresh done)."""
    await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await viewer.wait_for(received_more(viewer.stats.bytes_received), timeout=quiet_s)
        except TimeoutError:
            return
    raise TimeoutError("screen never settled")


async def idle(connect: Connect, meters: Meters, seconds: float) -> Result:
    async with connect() as viewer:
        await settle(viewer)
        before, updates = viewer.stats.bytes_received, viewer.stats.updates
        meters.start()
        t0 = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await viewer.wait_for(lambda v: False, timeout=seconds)
        elapsed = time.monotonic() - t0
        return Result("idle", {"bytes": viewer.stats.bytes_received - before, "seconds": elapsed,
                               "updates": viewer.stats.updates - updates, **meters.figures(), **load_figures()})


async def typing(connect: Connect, meters: Meters, seconds: float, xvfb: XvfbHandle, name: str = "typing") -> Result:
    with spawn([sys.executable, "-c", TK_PROBE], env=xvfb.env(), stdout=subprocess.PIPE, text=True) as tk:
        read_line(tk, lambda line: line == "ready", 15)
        async with connect() as viewer:
            await settle(viewer)
            focus = getattr(xvfb, "focus_probe", None)  # a desktop that places windows itself (Wayland) finds it
            px, py, pw, ph = await focus(viewer) if focus is not None else PROBE
            await viewer.send_mouse(px + 200, py + 100)  # pointer over the Tk window

            def probe_is(value: int) -> Callable[[Viewer], bool]:
                return lambda v: bool(np.all(np.abs(v.region(px + 4, py + 4, pw - 8, ph - 8).astype(int) - value) < 40))

            white = False
            latencies: list[float] = []
            before = viewer.stats.bytes_received
            meters.start()
            t0 = time.monotonic()
            n = int(seconds * 10)
            for i in range(n):
                due = t0 + i * 0.1
                await asyncio.sleep(max(0.0, due - time.monotonic()))  # pacing, 10 keys/s
                white = not white
                sent = time.monotonic()
                await viewer.send_key("KeyA", "down")
                await viewer.wait_for(probe_is(255 if white else 0), timeout=2)
                latencies.append(time.monotonic() - sent)
                await viewer.send_key("KeyA", "up")
            await asyncio.sleep(max(0.0, t0 + n * 0.1 - time.monotonic()))
            elapsed = time.monotonic() - t0
            latencies.sort()
            q = statistics.quantiles(latencies, n=20)
            return Result(name, {
                "keys": n,
                "key_to_screen_p50_ms": 1000 * statistics.median(latencies),
                "key_to_screen_p95_ms": 1000 * q[18],
                "key_to_screen_max_ms": 1000 * latencies[-1],
                "bytes_per_s": (viewer.stats.bytes_received - before) / elapsed,
                **meters.figures(),
                **load_figures(),
            })


#: Pointer moves a second while the technician moves the mouse (a browser sends about one a frame).
POINTER_RATE = 60


def pointer_path(i: int) -> tuple[int, int]:
    """The i-th point of a slow figure of eight across the middle of the screen."""
    t = i / POINTER_RATE
    return (int(WIDTH / 2 + WIDTH / 3 * math.sin(t)), int(HEIGHT / 2 + HEIGHT / 3 * math.sin(2 * t)))


async def pointer(connect: Connect, meters: Meters, seconds: float, xvfb: XvfbHandle) -> Result:
    """The technician moves the mouse, 60 moves a second over a still screen: the injection path's CPU, and
    that the last move landed where it was sent (xdotool)."""
    async with connect() as viewer:
        await settle(viewer)
        before = viewer.stats.bytes_received
        n = int(seconds * POINTER_RATE)
        meters.start()
        t0 = time.monotonic()
        for i in range(n):
            await asyncio.sleep(max(0.0, t0 + i / POINTER_RATE - time.monotonic()))  # pacing
            await viewer.send_mouse(*pointer_path(i))
        await asyncio.sleep(max(0.0, t0 + n / POINTER_RATE - time.monotonic()))
        elapsed = time.monotonic() - t0
        figures = {"moves": float(n), "bytes_per_s": (viewer.stats.bytes_received - before) / elapsed,
                   **meters.figures(), **load_figures()}
        last = pointer_path(n - 1)
        deadline = time.monotonic() + 5
        while mouse_location(xvfb.display) != last and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # polling with a deadline
        figures["last_move_landed"] = float(mouse_location(xvfb.display) == last)
        return Result("pointer", figures)


#: Reference corners per source filter chain (rendered once, shared by Helpline and the peer).
_TRACKER_CORNERS: dict[str, Any] = {}


def frame_tracker(vf: str, seconds: float) -> FrameTracker:
    """A fresh tracker for ``vf`` (the references are rendered once per run, before any meter starts)."""
    if vf not in _TRACKER_CORNERS:
        _TRACKER_CORNERS[vf] = FrameTracker.for_source(vf, int((seconds + 25) * 30)).references
    return FrameTracker(_TRACKER_CORNERS[vf])


async def motion(connect: Connect, meters: Meters, seconds: float, xvfb: XvfbHandle, name: str, vf: str) -> Result:
    vf = player_source(vf)
    argv = ["ffplay", "-f", "lavfi", "-i", vf, "-fs", "-an", "-loglevel", "error", "-stats", "-noborder",
            "-x", str(WIDTH), "-y", str(HEIGHT), "-left", "0", "-top", "0"]
    tracker = frame_tracker(vf, seconds)
    log = tempfile.NamedTemporaryFile(prefix="ffplay-", suffix=".log")  # noqa: SIM115 - closed below
    # The session starts first, then the player: windows mapped at session start (the
    # unattended-session indicator) end up below the full-screen player, as on a real desktop.
    async with connect() as viewer:
        await viewer.wait_for(lambda v: v.stats.updates >= 1, timeout=15)
        with log, spawn(argv, env={**xvfb.env(), "SDL_AUDIODRIVER": "dummy"}, stdin=subprocess.DEVNULL,
                        stderr=log) as player:
            first = viewer.stats.updates
            await viewer.wait_for(lambda v: v.stats.updates >= first + 5, timeout=15)
            await asyncio.sleep(1.0)  # warm-up: quality adaptation settles
            rtts: list[float] = []

            async def sample_rtt() -> None:
                while True:
                    await asyncio.sleep(0.5)  # sampling interval of the agent's reported ack RTT
                    if viewer.agent_stats is not None:
                        rtts.append(viewer.agent_stats.rtt_ms)

            sampler = asyncio.create_task(sample_rtt())
            meters.start()
            t0 = time.monotonic()
            drops0 = ffplay_drops(log.name)
            u0, b0 = viewer.stats.updates, viewer.stats.bytes_received
            with contextlib.suppress(TimeoutError):  # every update is looked at; the wait itself never holds
                await viewer.wait_for(tracker.observer(time.monotonic), timeout=seconds)
            elapsed = time.monotonic() - t0
            sampler.cancel()
            source_fps = 30 - (ffplay_drops(log.name) - drops0) / elapsed
            ups = (viewer.stats.updates - u0) / elapsed
            bps = (viewer.stats.bytes_received - b0) / elapsed
            cpu = meters.figures()
            load = load_figures()
            distinct_fps = tracker.distinct_between(t0, t0 + elapsed) / elapsed
            # Motion stops: freeze the player; the still frame must become exact (lossless).
            os.kill(player.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            screen = await grab_screen(xvfb)
            exact = await becomes_exact(viewer, screen, timeout=5)
            if not exact:  # the peer: no lossless pass; wait until it stops sending
                await settle(viewer, quiet_s=0.3)
            settled = max(t for t, _ in viewer.stats.arrivals)
            settled_psnr = psnr(viewer.framebuffer, screen)
            os.kill(player.pid, signal.SIGCONT)
    tracker.last = -1
    frozen, _ = tracker.identify(screen)
    # The references must be what ffplay drew: PSNR of the frozen screen against its reference.
    reference_check = psnr_against_source(vf, [(frozen, screen)], WIDTH, HEIGHT)
    motion_psnr = psnr_against_source(vf, tracker.samples, WIDTH, HEIGHT)
    half = max(1, len(rtts) // 2)
    return Result(name, {
        "source_fps": source_fps,
        "distinct_frames_per_s": distinct_fps,
        "updates_per_s": ups,
        "bytes_per_s": bps,
        **cpu,
        # The comparable figure when the viewer (starved on a loaded box) limits the frame rate.
        "agent_cpu_ms_per_distinct_frame": 10 * cpu["agent_cpu_pct"] / distinct_fps if distinct_fps else float("nan"),
        "psnr_motion_db": motion_psnr,
        "psnr_samples": float(len(tracker.samples)),
        "reference_vs_screen_psnr_db": reference_check,
        "ack_rtt_first_half_ms": statistics.mean(rtts[:half]) if rtts else float("nan"),
        "ack_rtt_second_half_ms": statistics.mean(rtts[half:]) if rtts[half:] else float("nan"),
        "jpeg_quality": float(viewer.agent_stats.quality if viewer.agent_stats else 0),
        "settled_after_stop_ms": 1000 * (settled - stopped),
        "exact_after_settle": float(exact),
        "psnr_after_settle_db": settled_psnr,
        **load,
    })


async def becomes_exact(viewer: Any, screen: np.ndarray, timeout: float) -> bool:
    """Wait (deadline) until the viewer's framebuffer equals the frozen ``screen``; False if it never does."""
    deadline = time.monotonic() + timeout
    while not np.array_equal(viewer.framebuffer, screen):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        before = viewer.stats.updates
        with contextlib.suppress(TimeoutError):
            await viewer.wait_for(lambda v, n=before: v.stats.updates > n, timeout=min(left, 1.0))
    return True


def ffplay_drops(path: str) -> int:
    """Frames ffplay dropped so far (its -stats line: ``fd=N``), to tell a slow source from a slow agent."""
    text = Path(path).read_bytes().decode(errors="replace")
    found = re.findall(r"fd=\s*(\d+)", text)
    return int(found[-1]) if found else 0


async def grab_screen(desktop: Any) -> np.ndarray:
    """The screen now: mss on X11; a desktop that brings its own grab (Wayland: a cast) uses that."""
    own = getattr(desktop, "grab_screen", None)
    return await own() if own is not None else grab(desktop.display)


def grab(display: str) -> np.ndarray:
    import mss

    with mss.MSS(display=display) as sct:
        shot = sct.grab(sct.monitors[1])
    return np.frombuffer(shot.raw, dtype=np.uint8).reshape(shot.height, shot.width, 4)[:, :, :3].copy()


# --- the direct path --------------------------------------------------------------------


def start_direct_agent(stack: contextlib.ExitStack, xvfb: XvfbHandle) -> tuple[str, int]:
    """The benchmark's own agent subprocess (screen session behind a plain websocket): (url, pid)."""
    agent = stack.enter_context(spawn(
        [sys.executable, __file__, "--agent", "--display", xvfb.display],
        env={**xvfb.env(), "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ))
    port = json.loads(read_line(agent, lambda line: line.startswith('{"port"'), 20))["port"]
    return f"ws://127.0.0.1:{port}/", agent.pid


def direct_connect(url: str) -> Connect:
    return lambda: Viewer(url)


# --- the relayed path: real server + real agent processes --------------------------------


def wait_for_file_text(path: Path, needle: str, proc: subprocess.Popen[Any], timeout: float) -> None:
    """Poll a log file until ``needle`` appears (deadline; the process must stay alive)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited ({proc.returncode}); see {path}")
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.1)  # polling interval
    raise TimeoutError(f"{needle!r} not in {path} after {timeout}s")


class BenchOrg:
    """A throw-away org root with two approvers, a technician and a revoker (keys in this process only)."""

    def __init__(self) -> None:
        from certs import ceremony
        from protocol.authority import Ed25519Key, b64encode

        self.ceremony = ceremony
        now = time.time()
        self.root_key = ceremony.generate_key()
        self.root = ceremony.new_root(self.root_key, name="Benchmark org", now=now - 60)
        self.keys: dict[str, Any] = {}
        self.certs: list[Any] = []
        for label, kind, holder in (("alice", "approver", "Alice"), ("bob", "approver", "Bob"),
                                    ("nightshift", "technician", "Night Shift"), ("desk", "revoker", "Desk")):
            self.keys[label] = ceremony.generate_key()
            self.certs.append(ceremony.issue_cert(
                self.root_key, self.root, kind=kind, holder=holder, credential_id=f"{label}-credential",  # type: ignore[arg-type]
                public_key=Ed25519Key(raw=b64encode(ceremony.raw_public(self.keys[label]))), not_before=now - 60,
                not_after=now + 86400, now=now))

    def authority(self) -> dict[str, Any]:
        """What ``helpline trust publish`` uploads: root, certificates, a revocation list valid for a day."""
        import msgspec

        from protocol.authority import RevocationList

        now = time.time()
        listed = RevocationList(sequence=1, issued_at=now - 60, expires_at=now + 23 * 3600)
        revocations = self.ceremony.sign_revocation_list(self.keys["desk"], "desk-credential", listed)
        return dict(msgspec.to_builtins({"root": self.root, "certs": self.certs, "revocations": revocations}))

    def grant(self, device_id: str) -> dict[str, Any]:
        """Unattended view and control of ``device_id`` for Night Shift, approved by Alice and Bob."""
        import msgspec

        from protocol.authority import UnattendedGrant, new_document

        now = time.time()
        document = new_document("grant", UnattendedGrant(
            grant_id="bench-grant", devices=[device_id], technician_names=["Night Shift"],
            actions=["view", "control"], not_before=now - 60, not_after=now + 86400, issuer="Alice", issued_at=now,
            reason="overnight maintenance (benchmark)"))
        for signer in ("alice", "bob"):
            document = self.ceremony.approve(document, credential_id=f"{signer}-credential", key=self.keys[signer])
        return dict(msgspec.to_builtins(document))

    def proof(self, challenge: dict[str, Any]) -> dict[str, Any]:
        """Night Shift's signature over the device's challenge (``helpline approve prove``)."""
        import msgspec

        from protocol.authority import TechnicianStatement

        statement = TechnicianStatement(nonce=challenge["nonce"], device_id=challenge["device_id"],
                                        action=challenge["action"], document_id=challenge["document_id"],
                                        signed_at=time.time())
        return dict(msgspec.to_builtins(self.ceremony.sign_technician_statement(
            self.keys["nightshift"], "nightshift-credential", statement)))


class ServerStack:
    """``helpline server`` + ``helpline agent run`` pinned to an org root + technician token + approved grant."""

    GROUP = "bench"
    TECHNICIAN = "nightshift"
    ADMIN = "benchadmin"

    def __init__(self, workdir: Path, xvfb: XvfbHandle) -> None:
        self.workdir = workdir
        self.xvfb = xvfb
        self.config = workdir / "helpline.toml"
        self.pki = workdir / "data" / "pki"
        self.agent_port, self.console_port = free_port(), free_port()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "HELPLINE_AGENT_PORT": str(self.agent_port),
                    "HELPLINE_CONSOLE_PORT": str(self.console_port)}
        self.server_pid = self.agent_pid = 0
        self.device_id = self.grant_id = self.api_token = self.admin_token = ""
        self.org = BenchOrg()

    def helpline(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        result = subprocess.run([sys.executable, "-m", "helpline", *args], capture_output=True, text=True,
                                timeout=120, env=dict(env or self.env), cwd=ROOT, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"helpline {' '.join(args[:3])} failed ({result.returncode}): {result.stderr[-2000:]}")
        return result.stdout

    def _spawn(self, stack: contextlib.ExitStack, args: list[str], log: str, env: dict[str, str]
               ) -> subprocess.Popen[bytes]:
        with (self.workdir / log).open("ab") as out:
            return stack.enter_context(spawn([sys.executable, "-m", "helpline", *args], env=env, stdout=out,
                                             stderr=subprocess.STDOUT, cwd=ROOT))

    def start(self, stack: contextlib.ExitStack) -> None:
        cfg = ["--config", str(self.config)]
        self.helpline("certs", "init", "--dir", str(self.pki), "--server-name", "localhost", "--discard-root")
        self.config.write_text(f'[server]\ndata_dir = "{self.workdir / "data"}"\nhost = "127.0.0.1"\n')
        server = self._spawn(stack, ["server", *cfg], "server.log", self.env)
        self.server_pid = server.pid
        wait_for_file_text(self.workdir / "server.log", "server listening", server, 60)
        # Enrollment, exactly as an admin and a device would do it.
        words = self.helpline("admin", "token", "create", "--group", self.GROUP, *cfg).split()
        url, token, fingerprint = words[3], words[4], words[6]
        state = self.workdir / "agent"
        self.helpline("agent", "enroll", url, token, "--ca-sha256", fingerprint, "--root-sha256",
                      self.org.root.fingerprint, "--state", str(state))
        self.device_id = json.loads((state / "agent.json").read_text())["device_id"]
        # A technician with an API token; an admin relays the org's authority and the approved grant.
        self.helpline("admin", "user", "create", self.TECHNICIAN, "--role", "technician", "--group", self.GROUP,
                      "--generate-password", *cfg)
        self.api_token = self.helpline("admin", "user", "token", self.TECHNICIAN, "--label", "benchmark",
                                       *cfg).split()[-1]
        self.helpline("admin", "user", "create", self.ADMIN, "--role", "admin", "--generate-password", *cfg)
        self.admin_token = self.helpline("admin", "user", "token", self.ADMIN, "--label", "benchmark",
                                         *cfg).split()[-1]
        self.relay_authority()
        agent = self._spawn(stack, ["agent", "run", "--state", str(state)], "agent.log",
                            {**self.xvfb.env(), "PYTHONPATH": str(ROOT)})
        self.agent_pid = agent.pid
        wait_for_file_text(state / "device-audit.jsonl", '"document_id":"bench-grant"', agent, 60)

    @property
    def console(self) -> str:
        return f"https://localhost:{self.console_port}"

    def ssl_context(self) -> Any:
        return tls.agent_client_context(self.pki / "ca.pem", None, None)

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
        import aiohttp

        async with aiohttp.ClientSession() as http, http.request(
            method, f"{self.console}{path}", json=body, ssl=self.ssl_context(),
            headers={"Authorization": f"Bearer {token or self.api_token}"},
        ) as response:
            answer = await response.json(content_type=None)
            if response.status not in (200, 201):
                raise RuntimeError(f"{method} {path} refused: {response.status} {answer}")
            return answer

    def relay_authority(self) -> None:
        """``helpline trust publish`` and ``helpline approve submit``, by the admin (before the agent starts)."""
        import urllib.request

        for path, body in (("/api/v1/authority", self.org.authority()),
                           ("/api/v1/documents", self.org.grant(self.device_id))):
            request = urllib.request.Request(f"{self.console}{path}", data=json.dumps(body).encode(), method="POST",
                                             headers={"Authorization": f"Bearer {self.admin_token}",
                                                      "Content-Type": "application/json"})
            with urllib.request.urlopen(request, context=self.ssl_context(), timeout=30) as response:
                response.read()
        self.grant_id = "bench-grant"

    async def request_session(self) -> str:
        """An unattended session under the grant; the technician answers the device's challenge."""
        body = {"mode": "control", "reason": "benchmark", "document_id": self.grant_id}
        session = await self.call("POST", f"/api/v1/devices/{self.device_id}/sessions", body)
        path = f"/api/v1/sessions/{session['session_id']}"
        deadline = time.monotonic() + 30
        while session["challenge"] is None:
            if session["state"] == "ended" or time.monotonic() > deadline:
                raise RuntimeError(f"no challenge from the device: {session.get('end_reason')}")
            await asyncio.sleep(0.05)  # polling interval
            session = await self.call("GET", path)
        await self.call("POST", f"{path}/proof", self.org.proof(session["challenge"]))
        return str(session["stream_url"])

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Viewer]:
        """A new unattended session and the reference viewer on its console stream."""
        path = await self.request_session()
        url = f"wss://localhost:{self.console_port}{path}"
        headers = {"Authorization": f"Bearer {self.api_token}", "Origin": self.console}
        async with Viewer(url, ssl_context=self.ssl_context(), headers=headers) as viewer:
            yield viewer


# --- running ----------------------------------------------------------------------------


async def play(name: str, connect: Connect, meters: Meters, seconds: float, xvfb: XvfbHandle) -> Result:
    if name == "idle":
        return await idle(connect, meters, seconds)
    if name == "typing":
        return await typing(connect, meters, seconds, xvfb)
    if name == "pointer":
        return await pointer(connect, meters, seconds, xvfb)
    if name == "motion":
        return await motion(connect, meters, seconds, xvfb, "motion", "testsrc2=size=1920x1080:rate=30")
    if name == "video":
        return await motion(connect, meters, seconds, xvfb, "video", "testsrc2=size=1920x1080:rate=30,hue=H=2*PI*t/10")
    raise ValueError(name)


def relay_added(via: Result, direct: Result) -> Result:
    """The latency the relay adds: typing via server minus typing direct, same screen, same minute."""
    figures = {f"added_{k}": via.figures[k] - direct.figures[k]
               for k in ("key_to_screen_p50_ms", "key_to_screen_p95_ms")}
    return Result("relay", figures)


async def run(args: argparse.Namespace) -> list[Result]:
    xvfb = start_xvfb(WIDTH, HEIGHT)
    results: list[Result] = []
    wanted = args.only or ["idle", "typing", "pointer", "motion", "video"]
    try:
        with contextlib.ExitStack() as stack:
            if args.via_server:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="helpline-bench-")))
                served = ServerStack(workdir, xvfb)
                served.start(stack)
                print(f"server pid {served.server_pid}, agent pid {served.agent_pid}, device {served.device_id}, "
                      f"grant {served.grant_id}", flush=True)
                await wait_cpu_quiet(served.agent_pid)
                meters = Meters({"agent": served.agent_pid, "relay": served.server_pid, "xserver": xvfb.pid})
                connect: Connect = served.session
            else:
                url, agent_pid = args.url, args.agent_pid
                if url is None:
                    url, agent_pid = start_direct_agent(stack, xvfb)
                meters = Meters({"agent": agent_pid, "xserver": xvfb.pid})
                connect = direct_connect(url)
            peer: tuple[Connect, Meters] | None = None
            if args.peer == "x11vnc":
                port, peer_pid = start_x11vnc(stack, xvfb)
                peer = (peer_connect(port, args.peer_encoding), Meters({"agent": peer_pid, "xserver": xvfb.pid}))
            for round_ in range(args.rounds):
                for name in wanted:
                    # Each workload runs on Helpline, then on the peer, minutes apart at most: same machine load.
                    ours = await play(name, connect, meters, args.seconds, xvfb)
                    ours.round = round_
                    results.append(ours)
                    print(format_result(ours), flush=True)
                    if peer is not None:
                        peer_result = await play(name, peer[0], peer[1], args.seconds, xvfb)
                        peer_result.system, peer_result.round = args.peer, round_
                        results.append(peer_result)
                        print(format_result(peer_result), flush=True)
            if args.via_server and "typing" in wanted:
                url, agent_pid = start_direct_agent(stack, xvfb)
                direct = await typing(direct_connect(url), Meters({"agent": agent_pid}), args.seconds, xvfb,
                                      "typing_direct")
                results.append(direct)
                print(format_result(direct), flush=True)
                via = next(r for r in results if r.name == "typing")
                results.append(relay_added(via, direct))
                print(format_result(results[-1]), flush=True)
    finally:
        xvfb.stop()
    return results


def format_result(result: Result) -> str:
    figures = ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.figures.items())
    who = "" if result.system == "helpline" else f"[{result.system}] "
    return f"{who}{result.name:7s} {figures}"


def side_by_side(results: list[Result], peer: str) -> str:
    """A markdown table: each workload's figures for Helpline and the peer, same run (the first round)."""
    lines = [f"| workload | figure | Helpline | {peer} |", "|---|---|---|---|"]
    for ours in (r for r in results if r.system == "helpline" and r.round == 0):
        theirs = next((r for r in results if r.system == peer and r.name == ours.name and r.round == 0), None)
        if theirs is None:
            continue
        for key, value in ours.figures.items():
            other = theirs.figures.get(key, float("nan"))
            lines.append(f"| {ours.name} | {key} | {value:.1f} | {other:.1f} |")
    return "\n".join(lines)


def cpu_rounds(results: list[Result], peer: str, figure: str = "agent_cpu_pct") -> str:
    """Per workload, Helpline's ``figure`` minus the peer's in each round (each pair minutes apart on the same
    machine), their mean with its standard error, and in how many rounds Helpline was at or below: the CPU targets
    with the noise shown."""
    lines = []
    names = list(dict.fromkeys(r.name for r in results if r.system == "helpline"))
    for name in names:
        diffs = []
        for ours in (r for r in results if r.system == "helpline" and r.name == name):
            theirs = next((r for r in results if r.system == peer and r.name == name and r.round == ours.round), None)
            if theirs is not None and figure in ours.figures and figure in theirs.figures:
                diffs.append(ours.figures[figure] - theirs.figures[figure])
        if not diffs:
            continue
        at_or_below = sum(d <= 0 for d in diffs)
        # The mean's standard error: a mean within about two of zero is a tie on this machine, not a lead.
        spread = f" ± {statistics.stdev(diffs) / math.sqrt(len(diffs)):.2f} (standard error)" if len(diffs) > 1 else ""
        lines.append(f"{name:7s} {figure} Helpline - {peer} per round: {' '.join(f'{d:+.1f}' for d in diffs)}; "
                     f"mean {sum(diffs) / len(diffs):+.2f}{spread}; at or below in {at_or_below} of {len(diffs)}")
    return "\n".join(lines)


# --- the peer: x11vnc on the same display, driven by a small RFB client -------------------


def start_x11vnc(stack: contextlib.ExitStack, xvfb: XvfbHandle) -> tuple[int, int]:
    """x11vnc (Debian's, default settings: XDAMAGE, XShm) on the benchmark's display: (port, pid)."""
    import shutil
    import socket

    if shutil.which("x11vnc") is None:
        raise SystemExit("x11vnc is not installed (scripts/setup.sh: apt-get install x11vnc)")
    port = free_port()
    proc = stack.enter_context(spawn(
        ["x11vnc", "-display", xvfb.display, "-rfbport", str(port), "-localhost", "-forever", "-shared",
         "-nopw", "-quiet", "-norc"],
        env=xvfb.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"x11vnc exited ({proc.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return port, proc.pid
        time.sleep(0.1)  # polling interval while x11vnc starts
    raise TimeoutError("x11vnc did not listen within 30 s")


def peer_connect(port: int, encoding: str) -> Connect:
    return lambda: RfbViewer("127.0.0.1", port, encoding)  # type: ignore[arg-type, return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--display", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="control", help=argparse.SUPPRESS)
    parser.add_argument("--via-server", action="store_true",
                        help="run a real helpline server + agent and stream through the relay (unattended grant)")
    parser.add_argument("--url", help="viewer URL of an already running session (default: start a local agent)")
    parser.add_argument("--agent-pid", type=int, help="PID whose CPU to measure when --url is given")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each workload (max 10)")
    parser.add_argument("--only", action="append", choices=["idle", "typing", "pointer", "motion", "video"])
    parser.add_argument("--json", action="store_true", help="print results as JSON at the end")
    parser.add_argument("--backend", choices=["x11", "wayland"], default="x11",
                        help="wayland: a headless Mutter, next to a bare pipewiresrc consumer (benchmarks/screen_wayland.py)")
    parser.add_argument("--peer", choices=["x11vnc", "gnome-remote-desktop"],
                        help="also run every workload on this peer (same display, same run) and print both; "
                             "x11vnc on X11, gnome-remote-desktop (its RDP server) with --backend wayland")
    parser.add_argument("--peer-encoding", choices=["tight", "zrle"], default="tight",
                        help="RFB encoding the peer's viewer asks for (default tight: JPEG quality 6)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="play the workloads this many times, Helpline and the peer in turn, and print the "
                             "per-round CPU differences (absolute figures drift on a shared machine)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.agent:
        asyncio.run(agent_main(args.display, args.mode))
        return 0
    if args.via_server and args.url:
        parser.error("--via-server starts its own server; do not give --url")
    args.seconds = min(args.seconds, 10.0)
    if args.backend == "wayland":
        if args.via_server or args.url or args.peer not in (None, "gnome-remote-desktop"):
            parser.error("--backend wayland runs its own direct agent; no --via-server, --url or --peer x11vnc")
        from benchmarks import screen_wayland

        results = asyncio.run(screen_wayland.run(args))
        print(screen_wayland.side_by_side(results))
        if args.json:
            print(json.dumps({f"{r.system}:{r.name}": r.figures for r in results}, indent=2))
        return 0
    if args.peer == "gnome-remote-desktop":
        parser.error("--peer gnome-remote-desktop runs on --backend wayland (it needs GNOME's compositor)")
    results = asyncio.run(run(args))
    if args.peer:
        print(side_by_side(results, args.peer))
        print(cpu_rounds(results, args.peer))
    if args.json:
        print(json.dumps({f"{r.system}:{r.name}" + (f":{r.round}" if r.round else ""): r.figures for r in results},
                         indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
