"""Where recordings and task artifacts are kept for every node: a seam with two stores.

* :class:`LocalDirStore` (``object_store = "local"``, the default): today's directories — a recording
  is ``recordings_dir/<session>.hlrec``, an artifact ``data_dir/artifacts/<run>.tar.gz``. One node.
* :class:`JetStreamObjectStore` (``object_store = "nats"``): the NATS JetStream object store, bucket
  ``helpline-artifacts`` (``object_store_replicas`` copies in a NATS cluster), so a recording made on
  node B plays from node A. The node's own directories stay its working copy and cache: the relay
  writes a recording locally while the session is live and :meth:`put` copies it when it ends; a read
  on a node that does not have the file :meth:`fetch`-es it into place first.

Names are ``recordings/<file>`` and ``artifacts/<file>`` (:func:`check_name`). The bytes stored are the
file as it is on disk — sealed (server/storage/sealed.py) unless sealing is off — so neither NATS nor
whoever reads its disks ever holds a recording in the clear; unsealing happens on the way out
(server/storage/serve.py), on the node that has the storage key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.object_store import ObjectStore as NatsObjectStore

log = logging.getLogger(__name__)

BUCKET = "helpline-artifacts"
#: How long one attempt to reach NATS may take (it holds the store's lock), and how long after a failed
#: attempt calls fail at once instead of each waiting again.
CONNECT_TIMEOUT_S = 5.0
RETRY_AFTER_S = 5.0
#: The two kinds of object and the one file name shape each may have (no path separators, no "..").
_NAME = re.compile(r"^(recordings|artifacts)/([A-Za-z0-9_-][A-Za-z0-9_.-]{0,127})$")


class ObjectStoreError(RuntimeError):
    """The store could not be reached or refused an operation (the caller logs and answers 503/retries)."""


def check_name(name: str) -> tuple[str, str]:
    """(kind, file name) of a valid object name; ValueError otherwise (no request reaches another file)."""
    match = _NAME.match(name)
    if match is None or ".." in name:
        raise ValueError(f"bad object name {name!r}")
    return match.group(1), match.group(2)


def recording_names(session_id: str) -> list[str]:
    """The objects one session's recording consists of: stream, shell cast, metadata."""
    return [f"recordings/{session_id}{suffix}" for suffix in (".hlrec", ".cast", ".json")]


def artifact_name(run_id: str) -> str:
    return f"artifacts/{run_id}.tar.gz"


class ObjectStore(Protocol):
    """What recordings and artifacts need from shared storage."""

    async def put(self, name: str, path: Path) -> None:
        """Store the file at ``path`` as ``name`` (replacing an object of that name)."""

    async def fetch(self, name: str, dest: Path) -> bool:
        """Write object ``name`` to ``dest`` (atomically, 0600); False if there is no such object."""

    async def delete(self, name: str) -> bool:
        """Remove object ``name``; False if there was none."""

    async def exists(self, name: str) -> bool: ...

    async def list(self, prefix: str = "") -> list[str]:
        """Names of the objects starting with ``prefix``, sorted."""

    async def close(self) -> None: ...


class LocalDirStore:
    """The single-node default: objects are the files in the node's own directories."""

    def __init__(self, recordings_dir: Path, artifacts_dir: Path) -> None:
        self.dirs = {"recordings": recordings_dir, "artifacts": artifacts_dir}

    def path_of(self, name: str) -> Path:
        kind, file = check_name(name)
        return self.dirs[kind] / file

    async def put(self, name: str, path: Path) -> None:
        target = self.path_of(name)
        if not await asyncio.to_thread(_same_file, path, target):
            await asyncio.to_thread(_copy_atomic, path, target)

    async def fetch(self, name: str, dest: Path) -> bool:
        source = self.path_of(name)
        if not await asyncio.to_thread(source.is_file):
            return False
        if not await asyncio.to_thread(_same_file, source, dest):
            await asyncio.to_thread(_copy_atomic, source, dest)
        return True

    async def delete(self, name: str) -> bool:
        path = self.path_of(name)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        return True

    async def exists(self, name: str) -> bool:
        return await asyncio.to_thread(self.path_of(name).is_file)

    async def list(self, prefix: str = "") -> list[str]:
        def scan() -> list[str]:
            names = []
            for kind, directory in self.dirs.items():
                if directory.is_dir():
                    names += [f"{kind}/{p.name}" for p in directory.iterdir() if p.is_file() and _NAME.match(
                        f"{kind}/{p.name}")]
            return sorted(n for n in names if n.startswith(prefix))
        return await asyncio.to_thread(scan)

    async def close(self) -> None:
        return None


class JetStreamObjectStore:
    """NATS JetStream object store, bucket :data:`BUCKET`; connects on first use (server/bus/connection.py)."""

    def __init__(self, config: Any, *, replicas: int = 1, bucket: str = BUCKET) -> None:
        self._config = config
        self.replicas = replicas
        self.bucket = bucket
        self._client: Client | None = None
        self._store: NatsObjectStore | None = None
        self._lock = asyncio.Lock()
        self._retry_at = 0.0  # monotonic time before which a failed connect is not tried again

    async def _bucket(self) -> NatsObjectStore:
        async with self._lock:
            if self._store is not None:
                return self._store
            if time.monotonic() < self._retry_at:
                raise ObjectStoreError("the object store is unavailable (NATS unreachable moments ago)")
            import nats.errors
            from nats.js.api import ObjectStoreConfig
            from nats.js.errors import BucketNotFoundError

            from server.bus.connection import BusUnavailable, connect

            hint = ""
            try:
                if self._client is None:
                    self._client = await connect(self._config, start_timeout_s=CONNECT_TIMEOUT_S)
                if self._client is None:
                    raise ObjectStoreError("object_store = \"nats\" needs nats_url")
                js = self._client.jetstream()
                try:
                    self._store = await js.object_store(self.bucket)
                except BucketNotFoundError:
                    # A node on a bus with per-node permissions may not create streams: it times out here.
                    hint = (f" (bucket {self.bucket} does not exist and this node could not create it; on a bus "
                            "with per-node permissions the administrator creates it once: helpline certs nats-bucket)")
                    self._store = await js.create_object_store(
                        self.bucket, ObjectStoreConfig(description="Helpline recordings and task artifacts (sealed)",
                                                       replicas=self.replicas))
            except (BusUnavailable, nats.errors.Error, OSError, TimeoutError) as exc:
                self._retry_at = time.monotonic() + RETRY_AFTER_S
                raise ObjectStoreError(f"the object store is unavailable: {type(exc).__name__}{hint}") from exc
            log.info("object store ready", extra={"bucket": self.bucket, "replicas": self.replicas})
            return self._store

    async def put(self, name: str, path: Path) -> None:
        check_name(name)
        store = await self._bucket()
        with path.open("rb") as source:
            await _nats_call(store.put(name, source))

    async def fetch(self, name: str, dest: Path) -> bool:
        from server.storage.jetstream_read import fetch_into

        check_name(name)
        store = await self._bucket()
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A name of its own (O_EXCL, 0600): two fetches of one object at once must not write into one file.
        fd, partial = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".fetch")
        try:
            with os.fdopen(fd, "wb") as out:
                assert self._client is not None and store is not None
                # Chunk by chunk over STREAM.MSG.GET: nodes may not create consumers (certs/nats.py).
                if not await _nats_call(fetch_into(self._client.jetstream(), store, self.bucket, name, out)):
                    return False
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, dest)  # the digest was checked by nats-py before this point
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)

    async def delete(self, name: str) -> bool:
        from nats.js.errors import ObjectNotFoundError

        check_name(name)
        store = await self._bucket()
        try:
            await _nats_call(store.delete(name))
        except ObjectNotFoundError:
            return False
        return True

    async def exists(self, name: str) -> bool:
        from nats.js.errors import ObjectNotFoundError

        check_name(name)
        store = await self._bucket()
        try:
            await _nats_call(store.get_info(name))
        except ObjectNotFoundError:
            return False
        return True

    async def list(self, prefix: str = "") -> list[str]:
        from nats.js.errors import NotFoundError

        from server.storage.jetstream_read import list_names

        await self._bucket()
        assert self._client is not None
        try:  # STREAM.INFO + last metadata per object, no consumer (certs/nats.py)
            names: list[str] = await _nats_call(list_names(self._client.jetstream(), self.bucket))
        except NotFoundError:
            return []
        return [n for n in names if n.startswith(prefix)]

    async def close(self) -> None:
        client, self._client, self._store = self._client, None, None
        if client is not None:
            await client.drain()


async def _nats_call(call: Any) -> Any:
    """Await a nats-py call, turning transport failures into :class:`ObjectStoreError` (not-found passes)."""
    import nats.errors
    from nats.js.errors import NotFoundError

    try:
        return await call
    except NotFoundError:
        raise
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise ObjectStoreError(f"object store operation failed: {type(exc).__name__}") from exc


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".copy")  # 0600, its own
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def from_config(config: Any) -> ObjectStore:
    """The store ``config.object_store`` names ("local" or "nats"); ValueError for anything else."""
    data_dir = Path(getattr(config, "data_dir", "."))
    kind = getattr(config, "object_store", "local") or "local"
    if kind == "local":
        recordings = getattr(config, "recordings_dir", None) or data_dir / "recordings"
        return LocalDirStore(Path(recordings), data_dir / "artifacts")
    if kind == "nats":
        if not getattr(config, "nats_url", ""):
            raise ValueError('object_store = "nats" needs nats_url')
        return JetStreamObjectStore(config, replicas=int(getattr(config, "object_store_replicas", 1)))
    raise ValueError(f"object_store must be \"local\" or \"nats\", not {kind!r}")


async def ensure_local(store: ObjectStore, name: str, path: Path) -> bool:
    """True when ``path`` is on this node's disk, fetched from the store if it was not (another node's)."""
    if await asyncio.to_thread(path.is_file):
        return True
    try:
        return await store.fetch(name, path)
    except ObjectStoreError as exc:
        log.warning("object not fetched", extra={"object": name, "error": str(exc)})
        return False
