"""Keys every node of one deployment must share — checked, never made, when there is more than one node.

Three secrets live in files, never in the database (a dump opens nothing): the support-code pepper
(``support-codes.pepper``: a code made on one node is redeemed on another), the ticket connectors'
key (``tickets.key``: a connector saved on one node is decrypted on another) and, when the object store
is shared (``object_store = "nats"``), the storage key (``storage.key``: a recording sealed on one node
is played on another). A single node (no ``nats_url``) makes each on first start, as before.

With ``nats_url`` set a node that made its own key would quietly split the deployment (codes that do
not redeem, secrets and recordings that do not open elsewhere), so instead:

* a missing key file is a refusal to start (:func:`require_files`, before any feature loads its key);
* the first node records each key's *fingerprint* — HMAC-SHA256 of a fixed label under the key, which
  reveals nothing of the key — in ``shared_key_fingerprints``; every later node compares its own and
  refuses on a difference (:func:`check_recorded`).

``helpline admin keys init`` makes the files for the first node; the others get copies.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import keyfile
from common.config import ConfigError

log = logging.getLogger(__name__)

#: What the fingerprint HMAC is computed over (with the key's name): fixed, so equal keys give equal prints.
FINGERPRINT_LABEL = b"helpline shared-key fingerprint v1:"
HOW_TO_FIX = "copy it from another node of this deployment, or on the first node run `helpline admin keys init`"


@dataclass(frozen=True)
class SharedKey:
    name: str
    size: int
    path_of: Callable[[Any], Path]
    #: Whether the nodes of this configuration must share it (the storage key only with a shared store).
    shared_when: Callable[[Any], bool]


def _data_file(name: str) -> Callable[[Any], Path]:
    return lambda config: Path(config.data_dir) / name


def _storage_key_path(config: Any) -> Path:
    from server.storage.keys import storage_key_path

    return storage_key_path(config)


KEYS = (
    SharedKey("support-code pepper", 32, _data_file("support-codes.pepper"), lambda _config: True),
    SharedKey("ticket key", 32, _data_file("tickets.key"), lambda _config: True),
    SharedKey("storage key", 32, _storage_key_path,
              lambda config: getattr(config, "object_store", "local") != "local"),
)


def multinode(config: Any) -> bool:
    """More than one node: a bus is configured."""
    return bool(getattr(config, "nats_url", ""))


def shared(config: Any) -> list[SharedKey]:
    """The keys this configuration's nodes must hold alike."""
    return [key for key in KEYS if key.shared_when(config)]


def fingerprint(key: SharedKey, secret: bytes) -> str:
    """HMAC-SHA256 of the label and the key's name under the key: comparable between nodes, no use to anyone else."""
    return hmac.new(secret, FINGERPRINT_LABEL + key.name.encode(), hashlib.sha256).hexdigest()


def _read(key: SharedKey, config: Any) -> bytes:
    path = key.path_of(config)
    try:
        return keyfile.read_key(path, key.size)
    except FileNotFoundError:
        raise ConfigError(f"the {key.name} {path} is missing, and nats_url is set (more than one node): every "
                          f"node must hold the same one; {HOW_TO_FIX}") from None
    except (keyfile.KeyFileError, OSError) as exc:
        raise ConfigError(f"the {key.name}: {exc}") from exc


def require_files(config: Any) -> None:
    """ConfigError when a node of several lacks a shared key file (one node alone makes its own later)."""
    if multinode(config):
        for key in shared(config):
            _read(key, config)


async def check_recorded(config: Any, db: Any) -> None:
    """Record this deployment's key fingerprints (first node) or refuse a node whose keys differ."""
    if not multinode(config):
        return
    from server.bus.connection import node_name

    node = node_name(config)
    for key in shared(config):
        mine = fingerprint(key, _read(key, config))
        async with db.transaction() as tx:
            row = await tx.fetchone("SELECT fingerprint, node FROM shared_key_fingerprints WHERE name = ?",
                                    (key.name,))
            if row is None:
                await tx.execute("INSERT INTO shared_key_fingerprints (name, fingerprint, node, recorded_at) "
                                 "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                                 (key.name, mine, node, time.time()))
                row = await tx.fetchone("SELECT fingerprint, node FROM shared_key_fingerprints WHERE name = ?",
                                        (key.name,))
        if row is not None and row["fingerprint"] != mine:
            raise ConfigError(f"the {key.name} {key.path_of(config)} is not the one the other nodes of this "
                              f"deployment use (its fingerprint differs from the one node {row['node']!r} "
                              f"recorded in the database): copy the key file from a node that serves, and start again")


def init_key(key: SharedKey, config: Any) -> tuple[Path, bool] | None:
    """Make ``key``'s file if missing: (path, made now); None when this configuration uses no such key."""
    if key.name == "storage key" and not getattr(config, "seal_at_rest", True) and not key.shared_when(config):
        return None
    path = key.path_of(config)
    existed = path.exists()
    keyfile.load_or_create(path, key.size)
    return path, not existed
