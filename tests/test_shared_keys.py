"""Keys every node of one deployment shares: a node of several refuses a missing or different key.

Real nats-server and PostgreSQL (HELPLINE_TEST_PG_URL), nodes in-process on one schema, each with its
own data directory; one ``helpline server`` process for the message an operator sees.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import ConfigError
from server import shared_keys
from server.app import HelplineServer
from server.config import ServerConfig
from server.support_codes.settings import SupportCodeSettings
from tests import pg_store
from tests.harness import make_pki, running_server, server_config
from tests.nats_server import nats_server
from tests.procs import helpline

TWO_NODES = SupportCodeSettings(nodes=2)


def _pg() -> None:
    if not os.environ.get("HELPLINE_TEST_PG_URL"):
        raise RuntimeError("the shared-key tests need HELPLINE_TEST_PG_URL (nodes share one PostgreSQL)")


def keys_init(data: Path) -> str:
    """``helpline admin keys init`` for ``data``; its output."""
    return helpline("admin", "keys", "init", "--data", str(data)).stdout


def copy_keys(source: Path, target: Path) -> None:
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in ("support-codes.pepper", "tickets.key", "storage.key"):
        shutil.copy2(source / name, target / name)


def test_fingerprint_is_stable_per_key_and_reveals_nothing() -> None:
    """Same key, same print; another key or another name, another print; the key is not in it."""
    pepper, tickets = shared_keys.KEYS[0], shared_keys.KEYS[1]
    key = bytes(range(32))
    assert shared_keys.fingerprint(pepper, key) == shared_keys.fingerprint(pepper, bytes(range(32)))
    assert shared_keys.fingerprint(pepper, key) != shared_keys.fingerprint(pepper, bytes(32))
    assert shared_keys.fingerprint(pepper, key) != shared_keys.fingerprint(tickets, key)
    assert key.hex() not in shared_keys.fingerprint(pepper, key)


def test_the_storage_key_is_shared_only_with_a_shared_store(tmp_path: Path) -> None:
    """Local object store: each node seals its own files, so only the pepper and the ticket key must match."""
    local = ServerConfig(data_dir=tmp_path, nats_url="nats://127.0.0.1:1")
    assert [k.name for k in shared_keys.shared(local)] == ["support-code pepper", "ticket key"]
    nats = ServerConfig(data_dir=tmp_path, nats_url="nats://127.0.0.1:1", object_store="nats")
    assert [k.name for k in shared_keys.shared(nats)] == ["support-code pepper", "ticket key", "storage key"]


async def test_one_node_alone_makes_its_keys_as_before(tmp_path: Path) -> None:
    """No nats_url: no key file needed before the first start, the pepper is made by it."""
    async with running_server(tmp_path / "solo"):
        assert (tmp_path / "solo" / "support-codes.pepper").stat().st_size == 32


async def test_a_second_node_with_other_keys_or_none_refuses(tmp_path: Path) -> None:
    """First node records its keys' prints; a node with its own keys, or a missing key, refuses with the fix."""
    _pg()
    pki = make_pki(tmp_path / "pki")
    db_url = pg_store.url_for(tmp_path / "shared")
    with nats_server(tmp_path / "nats") as nats:
        common = {"pki_dir": pki, "database_url": db_url, "nats_url": nats.url, "support_codes": TWO_NODES}
        assert "made support-code pepper" in keys_init(tmp_path / "a")
        async with running_server(tmp_path / "a", node_id="node-a", **common) as a:
            rows = await a.db.fetchall("SELECT name, fingerprint, node FROM shared_key_fingerprints ORDER BY name")
            assert [(r["name"], r["node"]) for r in rows] == [("support-code pepper", "node-a"),
                                                            ("ticket key", "node-a")]
            secret = (tmp_path / "a" / "support-codes.pepper").read_bytes()
            assert all(secret.hex() not in r["fingerprint"] for r in rows)

            # B made its own keys: refused at start, naming the key and the node that recorded it.
            keys_init(tmp_path / "b")
            with pytest.raises(ConfigError, match=r"support-code pepper .* is not the one the other nodes .*node-a"):
                async with running_server(tmp_path / "b", node_id="node-b", **common):
                    pass

            # C has no ticket key at all: refused before anything makes one.
            copy_keys(tmp_path / "a", tmp_path / "c")
            (tmp_path / "c" / "tickets.key").unlink()
            with pytest.raises(ConfigError, match=r"ticket key .* is missing.*helpline admin keys init"):
                HelplineServer(server_config(tmp_path / "c", node_id="node-c", **common))
            assert not (tmp_path / "c" / "tickets.key").exists()

            # B with copies of A's keys: serves.
            copy_keys(tmp_path / "a", tmp_path / "b")
            async with running_server(tmp_path / "b", node_id="node-b", **common) as b:
                assert b.listening


def test_support_codes_nodes_one_with_a_bus_refuses(tmp_path: Path) -> None:
    """nats_url with support_codes.nodes = 1 is a refusal: the guessing bound would count one node of several."""
    keys_init(tmp_path / "n")
    with pytest.raises(ConfigError, match=r"support_codes.nodes is 1 but nats_url is set"):
        HelplineServer(server_config(tmp_path / "n", nats_url="nats://127.0.0.1:1"))


def test_the_server_process_says_what_to_do(tmp_path: Path) -> None:
    """``helpline server`` with a bus and no keys exits 2 with the message (copy the key, or keys init)."""
    make_pki(tmp_path / "data" / "pki")
    env = {**os.environ, "HELPLINE_NATS_URL": "nats://127.0.0.1:1", "HELPLINE_SUPPORT_CODES_NODES": "2"}
    result = subprocess.run([sys.executable, "-m", "helpline", "server", "--data", str(tmp_path / "data"),
                             "--host", "127.0.0.1", "--agent-port", "0", "--console-port", "0"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert "support-code pepper" in result.stderr and "is missing" in result.stderr
    assert "copy it from another node" in result.stderr and "helpline admin keys init" in result.stderr
    assert not (tmp_path / "data" / "support-codes.pepper").exists()
