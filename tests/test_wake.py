"""Wake-on-LAN: the packet, the planner, the agent's sender between network namespaces, the server's waker.

The namespace test needs root (``ip netns``); CI runs as root. The namespaces and their veth pair
are made for the test and deleted at the end; the listener runs by PID in the target namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.wake import WakeRelay
from protocol import codec
from protocol.errors import InvalidMessage
from protocol.wake import PACKET_BYTES, WakeRequest, mac_of_packet, magic_packet, normalize_mac
from server.tasks import service
from server.wake.planner import plan
from server.wake.waker import WAKER, network_section
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.tasks_helpers import signed_spec

ROOT = Path(__file__).resolve().parent.parent
MAC = "52:54:00:12:34:56"


# --- pure parts -----------------------------------------------------------------------------


def test_magic_packet_is_six_ff_and_sixteen_macs() -> None:
    """102 bytes: 6×0xFF then the MAC 16 times; any spelling of the MAC gives the same packet."""
    packet = magic_packet("52-54-00-12-34-56")
    assert len(packet) == PACKET_BYTES and packet[:6] == b"\xff" * 6
    assert packet[6:] == bytes.fromhex("525400123456") * 16
    assert mac_of_packet(packet) == MAC and mac_of_packet(packet[:-1]) is None
    for bad in ("ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "01:00:5e:00:00:01", "52:54:00:12:34", "zz:54:00:12:34:56"):
        with pytest.raises(ValueError):
            normalize_mac(bad)


def test_wake_request_is_validated_at_the_boundary() -> None:
    """A request round-trips; bad MACs, bad addresses and too many entries are invalid messages."""
    request = WakeRequest(target_device="dev-1", macs=[MAC], broadcasts=["10.0.0.255"])
    assert codec.decode(codec.encode(request)) == request
    wire = json.loads(codec.encode(request))
    for field, value in (("macs", ["52:54:00:12:34"]), ("macs", []), ("macs", [MAC] * 9),
                         ("broadcasts", ["10.0.0.300"]), ("broadcasts", ["example.org"]), ("port", 0)):
        with pytest.raises(InvalidMessage):
            codec.decode(json.dumps({**wire, field: value}))


def _section(*interfaces: tuple[str | None, str, str]) -> dict[str, Any]:
    return {"interfaces": [{"name": f"eth{i}", "mac": mac, "ipv4": [{"address": a, "netmask": m}]}
                           for i, (mac, a, m) in enumerate(interfaces)]}


def test_planner_picks_a_relay_on_the_sleepers_network() -> None:
    """Only a relay sharing an IPv4 network qualifies; the broadcast addresses are the shared networks'."""
    target = _section((MAC, "10.1.2.30", "255.255.255.0"), ("52:54:00:aa:bb:cc", "127.0.0.1", "255.0.0.0"))
    relays = {"far": _section(("52:54:00:00:00:01", "10.9.0.5", "255.255.255.0")),
              "near": _section(("52:54:00:00:00:02", "10.1.2.40", "255.255.255.0"))}
    chosen = plan(target, relays)
    assert chosen is not None and chosen.relay == "near" and chosen.broadcasts == ["10.1.2.255"]
    assert chosen.macs == [MAC, "52:54:00:aa:bb:cc"]
    assert plan(target, {"far": relays["far"]}) is None
    assert plan({"interfaces": "garbage"}, relays) is None and plan(None, relays) is None


# --- the sender, between network namespaces ---------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def namespaces() -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth pair: 10.231.0.1/24 (sender) and 10.231.0.2/24 (sleeper)."""
    assert os.geteuid() == 0, "the namespace test needs root (CI runs as root)"
    tag = f"{os.getpid() % 100000}"
    sender, sleeper = f"hlwake-s{tag}", f"hlwake-t{tag}"
    made: list[str] = []
    try:
        for name in (sender, sleeper):
            _ip("netns", "add", name)
            made.append(name)
        _ip("link", "add", f"hlws{tag}", "netns", sender, "type", "veth", "peer", "name", f"hlwt{tag}", "netns", sleeper)
        for name, dev, address in ((sender, f"hlws{tag}", "10.231.0.1/24"), (sleeper, f"hlwt{tag}", "10.231.0.2/24")):
            _ip("-n", name, "addr", "add", address, "dev", dev)
            _ip("-n", name, "link", "set", dev, "up")
            _ip("-n", name, "link", "set", "lo", "up")
        yield sender, sleeper
    finally:
        for name in made:  # deleting a namespace deletes its end of the veth pair, and so the pair
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


LISTENER = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", 9))
sock.settimeout(60)
print("ready", flush=True)
data, peer = sock.recvfrom(2048)
print(data.hex(), peer[0], flush=True)
"""

SENDER = """
import json, sys
from agent.wake import local_broadcasts, send_magic
allowed = local_broadcasts()
print(json.dumps([send_magic([sys.argv[1]], sys.argv[2:], 9, allowed), sorted(allowed)]))
"""


def test_magic_packet_reaches_the_sleepers_namespace() -> None:
    """The agent's sender in one namespace broadcasts on its own network only; a listener in the sleeper's
    namespace receives the magic packet for the right MAC from the sender's address."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with namespaces() as (sender, sleeper):
        listener = subprocess.Popen(["ip", "netns", "exec", sleeper, sys.executable, "-c", LISTENER],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert listener.stdout is not None
            assert listener.stdout.readline().strip() == "ready", listener.stderr.read() if listener.stderr else ""
            done = subprocess.run(["ip", "netns", "exec", sender, sys.executable, "-c", SENDER, MAC, "10.231.0.255",
                                   "192.0.2.255"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
            assert done.returncode == 0, done.stderr
            (sent, refused), networks = json.loads(done.stdout)
            assert networks == ["10.231.0.255"]  # the sender's namespace has one network
            assert sent == 1 and len(refused) == 1 and refused[0].startswith("192.0.2.255: not the broadcast")
            received, peer = listener.stdout.readline().split()
            assert listener.wait(timeout=30) == 0
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait(timeout=10)
    assert mac_of_packet(bytes.fromhex(received)) == MAC and peer == "10.231.0.1"


# --- the server asks an online neighbour before the window ---------------------------------------


class Recorder:
    """Stands in for the UDP send on the relay (the namespace test covers the real one)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str], int, float]] = []

    def __call__(self, macs: list[str], broadcasts: list[str], port: int,
                 allowed: Mapping[str, str]) -> tuple[int, list[str]]:
        self.calls.append((macs, broadcasts, port, time.time()))
        return len(macs) * len([b for b in broadcasts if b in allowed]), [b for b in broadcasts if b not in allowed]


async def _audit(server: Any, action: str) -> list[dict[str, Any]]:
    rows = await server.db.fetchall("SELECT actor, target, details FROM audit_log WHERE action = ? ORDER BY seq",
                                    (action,))
    return [{"actor": r["actor"], "target": r["target"], **json.loads(r["details"])} for r in rows]


@pytest.mark.timeout(180)
async def test_server_wakes_an_offline_device_before_its_window_and_not_an_online_one(tmp_path: Path) -> None:
    """A run 2 minutes ahead on an offline device: the online neighbour is asked (MACs and broadcast address
    from the inventory) before the run starts, audited with the relay's answer; a run beyond the lead time
    and a run on an online device wake nobody."""
    async with running_server(tmp_path / "server") as server:
        waker = server.console_app[WAKER]
        relay_state = await enroll_agent(server, tmp_path / "relay", group="lab")
        sleeper_state = await enroll_agent(server, tmp_path / "sleeper", group="lab")
        sleeper = sleeper_state.device_id
        async with running_agent(sleeper_state):  # once online: its inventory reaches the CMDB
            await wait_until(lambda: network_section(server.db, sleeper), timeout=60, what="the sleeper's inventory")
        await wait_until(lambda: server.connections.get(sleeper) is None, timeout=30, what="the sleeper offline")
        recorder = Recorder()

        def swap_sender(parts: Any) -> None:
            parts.client.register(WakeRequest, WakeRelay(parts.client, sender=recorder).on_request)

        async with running_agent(relay_state, setup=swap_sender) as relay:
            await wait_until(lambda: relay.client.ready.is_set() and server.connections.get(relay_state.device_id)
                             is not None, timeout=60, what="the relay online")
            await wait_until(lambda: network_section(server.db, relay_state.device_id), timeout=60,
                             what="the relay's inventory")
            expected = plan(await network_section(server.db, sleeper),
                            {relay_state.device_id: await network_section(server.db, relay_state.device_id)})
            assert expected is not None, "this machine has no IPv4 network besides loopback to test on"

            far = await service.create_task(server.db, await signed_spec(
                server.db, action="clear_temp", params={"targets": ["tmp"], "dry_run": True}, device=sleeper,
                run_at=time.time() + 7200, window_s=1800), actor="admin1")
            assert await waker.tick(time.time()) == 0 and not recorder.calls  # two hours ahead: not yet
            online = await service.create_task(server.db, await signed_spec(
                server.db, action="clear_temp", params={"targets": ["tmp"], "dry_run": True},
                device=relay_state.device_id, run_at=time.time() + 120, window_s=1800), actor="admin1")
            assert await waker.tick(time.time()) == 0 and not recorder.calls  # the relay itself is online

            starts = time.time() + 120
            await service.create_task(server.db, await signed_spec(
                server.db, action="clear_temp", params={"targets": ["tmp"], "dry_run": True}, device=sleeper,
                run_at=starts, window_s=1800), actor="admin1")
            await wait_until(lambda: bool(recorder.calls), timeout=30, what="the relay asked to wake the sleeper")
            macs, broadcasts, port, when = recorder.calls[0]
            assert (macs, broadcasts, port) == (expected.macs, expected.broadcasts, 9) and when < starts
            requested = await _audit(server, "device.wake.requested")
            assert [(r["actor"], r["target"], r["relay"]) for r in requested] == [
                ("server", sleeper, relay_state.device_id)]
            assert requested[0]["task_id"] not in (far["id"], online["id"])

            async def relayed() -> bool:
                return bool(await _audit(server, "device.wake.relayed"))

            await wait_until(relayed, timeout=30, what="the relay's answer audited")
            (answer,) = await _audit(server, "device.wake.relayed")
            assert answer["actor"] == f"device:{relay_state.device_id}" and answer["target"] == sleeper
            assert answer["sent"] == len(expected.macs) * len(expected.broadcasts) and answer["refused"] == []
            # Asked once per retry period, not every tick.
            assert await waker.tick(time.time()) == 0 and len(recorder.calls) == 1
    msgspec.json.encode(answer)  # the audit details are plain JSON
