"""The server's storage key: where it lives, and whether files are sealed at all (config ``seal_at_rest``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .sealed import StorageKey, seal_legacy

log = logging.getLogger(__name__)

_loaded: dict[Path, StorageKey] = {}


def storage_key_path(config: Any) -> Path:
    """``storage_key_file`` from the config, else ``data_dir/storage.key`` (0600, beside nothing it protects
    in the database: a database dump or a PostgreSQL account opens no recording)."""
    configured = getattr(config, "storage_key_file", None)
    return Path(configured) if configured else Path(getattr(config, "data_dir", ".")) / "storage.key"


def storage_key_of(config: Any) -> StorageKey | None:
    """The key new recordings and artifacts are sealed with; None when ``seal_at_rest`` is off.

    Reading still needs the key for files sealed earlier, so it is loaded whenever its file exists.
    """
    path = storage_key_path(config)
    key = _loaded.get(path)
    if key is None:
        if not getattr(config, "seal_at_rest", True) and not path.exists():
            return None
        key = _loaded[path] = StorageKey.load_or_create(path)
    key.plain_ok = not getattr(config, "seal_at_rest", True)
    return key


def sealing_key_of(config: Any) -> StorageKey | None:
    """The key to seal new files with (None: write them in the clear, ``seal_at_rest = false``)."""
    return storage_key_of(config) if getattr(config, "seal_at_rest", True) else None


def legacy_sealer(directory: Path, suffixes: tuple[str, ...], key: StorageKey,
                  what: str) -> Callable[[Any], Awaitable[None]]:
    """An ``on_startup`` hook sealing ``directory``'s files still in the clear before the node serves."""
    async def seal(_app: Any) -> None:
        count = await asyncio.to_thread(seal_legacy, directory, suffixes, key)
        if count:
            log.info("files from before sealing were sealed", extra={"what": what, "files": count,
                                                                     "directory": str(directory)})
    return seal
