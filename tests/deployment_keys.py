"""Test deployments of several nodes: the keys they must share, and ``support_codes.nodes`` to match.

With ``nats_url`` set a node refuses to start without the shared key files, or with keys whose
fingerprints differ from the first node's (server/shared_keys.py), and refuses ``support_codes.nodes
= 1``. Tests that start nodes on a bus get both here: each key derived from the deployment's
database URL (nodes on one database share it, as copied files would be in production) and written
into the node's data directory unless the test placed its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from common.files import atomic_write
from server import shared_keys
from server.config import ServerConfig

#: The node count tests declare for the support codes' guessing bound (every multi-node test runs at most 3).
TEST_NODES = 3


def write_keys(config: ServerConfig, deployment: str) -> None:
    """Every key ``config`` needs that is not there yet, the same for every node of ``deployment``."""
    for key in shared_keys.KEYS:
        path = key.path_of(config)
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            secret = hashlib.sha256(f"helpline test deployment {deployment}: {key.name}".encode()).digest()
            atomic_write(path, secret[:key.size], 0o600)


def multinode_ready(config: ServerConfig) -> ServerConfig:
    """``config`` of a node on a bus with the deployment's keys in place and ``support_codes.nodes`` set."""
    if not config.nats_url:
        return config
    write_keys(config, config.db_url)
    if config.support_codes.nodes == 1:
        config = replace(config, support_codes=replace(config.support_codes, nodes=TEST_NODES))
    return config


def env_for(data_dir: Path, db_url: str) -> dict[str, str]:
    """For a ``helpline server`` process on a bus: its keys written into ``data_dir``, and the env it needs."""
    write_keys(ServerConfig(data_dir=data_dir), db_url)
    return {"HELPLINE_SUPPORT_CODES_NODES": str(TEST_NODES)}

