"""server/bus/connection.py: what is logged, the backoff, the node's subject token, start without NATS."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from server.bus.connection import BACKOFF_CAP_S, BusUnavailable, backoff_delay, connect, node_name, redacted
from server.bus.events import subject_for
from server.config import ServerConfig
from tests.nats_server import nats_server
from tests.procs import free_port


def test_credentials_never_reach_the_log() -> None:
    """User, password and token are dropped from every URL of the list; hosts and ports stay."""
    text = redacted("nats://bob:s3cret@n1.example:4222, tls://tok3n@[::1]:4443")
    assert "s3cret" not in text and "bob" not in text and "tok3n" not in text
    assert text == "nats://n1.example:4222,tls://[::1]:4443"


def test_backoff_is_jittered_and_capped() -> None:
    """Full jitter: never above min(cap, base·2^n), and not the same for every node."""
    rng = random.Random(7)
    delays = [backoff_delay(n, rng) for n in range(30)]
    assert all(0 <= d <= min(BACKOFF_CAP_S, 0.25 * 2 ** n) for n, d in enumerate(delays))
    assert len({round(backoff_delay(5, rng), 6) for _ in range(20)}) > 1


def test_node_name_is_one_subject_token() -> None:
    """Dots, spaces and wildcards in a host name cannot widen the node's NATS subjects."""
    name = node_name(ServerConfig(node_id="a.b c*>"))
    assert name == "a_b_c__"
    assert subject_for("device.revoked") == "helpline.events.device.revoked"
    assert subject_for("bad >") is None and subject_for("") is None


async def test_no_url_no_bus_and_unreachable_bus_refuses_to_start(tmp_path: Path) -> None:
    """Empty nats_url: one node, no client. A NATS nobody answers: BusUnavailable within the deadline."""
    assert await connect(ServerConfig()) is None
    with pytest.raises(BusUnavailable) as refused:
        await connect(ServerConfig(nats_url=f"nats://u:pw@127.0.0.1:{free_port()}"), start_timeout_s=1.0)
    assert "pw" not in str(refused.value)
    with nats_server(tmp_path / "nats") as nats:
        client = await connect(ServerConfig(nats_url=nats.url))
        assert client is not None and client.is_connected
        await client.close()


async def test_a_node_stopped_while_the_bus_is_down_closes_its_client_and_leaves_no_task_behind(tmp_path: Path) -> None:
    """nats-server goes away, the node's client is reconnecting, the node stops: its client ends closed and nothing
    of it is left running in the loop. (``drain()`` refuses a reconnecting client; the client was left retrying,
    and once kept a test's event loop from closing for 78 s, cancellation or not.)"""
    from tests import pg_store
    from tests.harness import make_pki, running_server, wait_until
    from tests.nats_server import stop
    from tests.test_multinode_bus import _pg_url

    _pg_url()
    with nats_server(tmp_path / "nats") as nats:
        async with running_server(tmp_path / "a", node_id="node-a", pki_dir=make_pki(tmp_path / "pki"),
                                  database_url=pg_store.url_for(tmp_path / "shared"), nats_url=nats.url) as node:
            assert node.bus is not None
            client = node.bus.client
            assert client.is_connected
            stop(nats.proc)
            await wait_until(lambda: client.is_reconnecting, timeout=30, what="the node's client reconnecting")
            stopping_at = asyncio.get_running_loop().time()
        assert asyncio.get_running_loop().time() - stopping_at < 15
        assert client.is_closed
        await asyncio.sleep(0)  # the close's own callbacks run
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        assert not [t for t in left if "nats" in repr(t.get_coro())], left
