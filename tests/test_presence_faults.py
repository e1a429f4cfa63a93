"""Presence that converges (issue 12): the online flag is re-derived from live connections.

The fault test runs a private PostgreSQL cluster (tests/pg_cluster.py: stopped and started by
PID), a real agent subprocess and the server: the database is stopped, the agent killed (so the
server's "offline" write fails), the database started again; the device must show offline — and
its offline alert must open — within a minute.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server import devices
from server.accounts import admin
from server.cmdb import alerts, settings
from server.connections import ConnectionRegistry
from server.presence import Presence
from server.store import Database, open_database
from tests.conftest import add_device
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.pg_cluster import PrivateCluster, private_cluster
from tests.test_accounts_support import client, make_user

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pg_cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as cluster:
        yield cluster


@pytest.fixture
def agent_processes() -> Iterator[Callable[[Path, Path], subprocess.Popen[bytes]]]:
    """Starts ``helpline agent run`` subprocesses; each is killed by PID at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "helpline", "agent", "run", "--state", str(state_dir)],
                                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def _online(db: Database, device_id: str) -> bool:
    row = await devices.get(db, device_id)
    return row is not None and bool(row["online"])


async def _offline(db: Database, device_id: str) -> bool:
    return not await _online(db, device_id)


async def test_device_shows_offline_and_alerts_after_the_database_failed_at_its_disconnect(
        tmp_path: Path, pg_cluster: PrivateCluster,
        agent_processes: Callable[[Path, Path], subprocess.Popen[bytes]]) -> None:
    """Database down when the agent dies: after recovery the device is offline and alerted within a minute."""
    async with running_server(tmp_path / "srv", database_url=pg_cluster.url, presence_sweep_s=1.0,
                              presence_stale_s=3.0, maintenance_interval_s=1.0) as server:
        await settings.set_rule(server.db, "agent_offline", {"for_s": 5.0})
        acct = await make_user(server, "olga", "admin")
        token = await admin.create_token(server.db, acct.user_id, "monitor", None, actor="test")
        state = await enroll_agent(server, tmp_path / "agent")
        device_id = state.device_id
        agent = agent_processes(state.directory, tmp_path / "agent.log")
        await wait_until(lambda: _online(server.db, device_id), timeout=60, interval=0.2, what="agent online")

        pg_cluster.stop()
        agent.kill()  # SIGKILL: the server sees the connection drop while the database is down
        agent.wait(10)
        await wait_until(lambda: device_id in server.presence.owed, timeout=30, what="offline write failed, owed")

        pg_cluster.start()
        recovered = time.monotonic()
        seen: dict[str, float] = {}
        async with client(server, Authorization=f"Bearer {token.token}") as http:
            async def settled() -> bool:
                async with http.get(f"/api/v1/devices/{device_id}") as resp:
                    if resp.status != 200:  # the pool reconnecting
                        return False
                    body = await resp.json()
                if body["status"] == "offline":
                    seen.setdefault("offline", time.monotonic() - recovered)
                if any(a["rule"] == "agent_offline" for a in body["alerts"]):
                    seen.setdefault("alert", time.monotonic() - recovered)
                return len(seen) == 2

            await wait_until(settled, timeout=60, interval=0.25, what="offline and alerted after recovery")
        print(f"\nafter the database came back: offline in {seen['offline']:.1f} s, alert in {seen['alert']:.1f} s")
        assert not server.presence.owed
        row = await devices.get(server.db, device_id)
        assert row is not None and row["online"] == 0


async def test_the_sweep_rederives_flags_from_live_connections(tmp_path: Path) -> None:
    """A live connection flagged offline is set online again; a stale online flag with no connection goes offline."""
    async with running_server(tmp_path / "srv", presence_sweep_s=0.5, presence_stale_s=2.0) as server:
        state = await enroll_agent(server, tmp_path / "agent")
        # A device another (dead) node left flagged online: no connection anywhere, contact long ago.
        await add_device(server.db, "ghost", group="default")
        await server.db.execute("UPDATE devices SET online = 1, last_seen = ? WHERE id = 'ghost'", (time.time() - 60,))
        # A device whose contact is recent but held by no node here stays as it is until it is stale.
        await add_device(server.db, "elsewhere", group="default")
        await server.db.execute("UPDATE devices SET online = 1, last_seen = ? WHERE id = 'elsewhere'",
                                (time.time() + 3600,))
        async with running_agent(state):
            await wait_until(lambda: _online(server.db, state.device_id), timeout=30, what="agent online")
            await server.db.execute("UPDATE devices SET online = 0 WHERE id = ?", (state.device_id,))
            await wait_until(lambda: _online(server.db, state.device_id), timeout=10, what="live device online again")
            await wait_until(lambda: _offline(server.db, "ghost"), timeout=10, what="ghost offline")
            assert await _online(server.db, "elsewhere")


async def test_a_retried_offline_write_never_undoes_a_newer_connection(tmp_path: Path) -> None:
    """An owed offline write from before the device reconnected elsewhere changes nothing."""
    db = await _sqlite(tmp_path)
    try:
        await add_device(db)
        disconnected_at = time.time()
        await db.execute("UPDATE devices SET online = 1, last_seen = ? WHERE id = 'dev-1'", (disconnected_at + 5,))
        assert not await devices.mark_offline(db, "dev-1", disconnected_at)
        assert await _online(db, "dev-1")
        assert await devices.mark_offline(db, "dev-1", disconnected_at + 10)
        assert not await _online(db, "dev-1")
    finally:
        await db.close()


async def test_offline_alert_keys_on_last_contact_not_only_the_flag(tmp_path: Path) -> None:
    """A device flagged online but silent for days is alerted; a recent contact is not, flag or no flag."""
    db = await _sqlite(tmp_path)
    try:
        now = time.time()
        for dev, online, last_seen in (("stuck", 1, now - 2 * 86400), ("gone", 0, now - 2 * 86400),
                                       ("live", 1, now - 20), ("just-left", 0, now - 20)):
            await add_device(db, dev)
            await db.execute("UPDATE devices SET online = ?, last_seen = ? WHERE id = ?", (online, last_seen, dev))
        await alerts.evaluate_fleet(db, now)
        assert {a["device_id"] for a in await alerts.list_alerts(db, status="open")} == {"stuck", "gone"}
        assert not alerts.out_of_contact(True, now - 60, 5.0, now)  # within the grace: the flag is believed
        assert alerts.out_of_contact(True, now - alerts.CONTACT_GRACE_S - 1, 5.0, now)
        await db.execute("UPDATE devices SET last_seen = ? WHERE id = 'stuck'", (now,))
        await alerts.evaluate_fleet(db, now)
        assert {a["device_id"] for a in await alerts.list_alerts(db, status="open")} == {"gone"}
    finally:
        await db.close()


async def _sqlite(tmp_path: Path) -> Database:
    return await open_database(f"sqlite:///{tmp_path / 'store.db'}")


def test_stale_threshold_must_cover_other_nodes_sweeps() -> None:
    """A stale threshold under two sweeps would mark devices live on other nodes offline: refused."""
    with pytest.raises(ValueError, match="at least twice"):
        Presence(lambda: None, ConnectionRegistry(), sweep_s=30.0, stale_s=45.0)  # type: ignore[arg-type,return-value]

