"""A private append-only file written from a thread: recordings never block the event loop on disk.

The screen recording (:class:`server.sessions.relay.Recorder`) and the shell's asciicast
(:class:`server.sessions.shell_relay.CastRecorder`) both queue records here; a record that does not
fit the bounded queue is dropped with a warning rather than slowing the relay. With a storage key
each record is sealed as it is written (server/storage/sealed.py): nothing reaches the disk in the clear.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from pathlib import Path

from common.files import private_directory
from server.storage.sealed import SealedWriter, StorageKey

log = logging.getLogger(__name__)


class AppendSpool:
    """Appends byte records to ``path`` (0600, its directory 0700) from a writer thread."""

    def __init__(self, path: Path, *, max_records: int, what: str, key: StorageKey | None = None) -> None:
        self.path = path
        self.what = what
        self.key = key
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=max_records)
        private_directory(path.parent)
        self._thread = threading.Thread(target=self._run, name=f"spool-{path.stem}", daemon=True)
        self._thread.start()

    def put(self, record: bytes) -> None:
        """Queue one record; never blocks (a full queue drops it, with a warning)."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            log.warning("%s %s falls behind; a record is dropped from it", self.what, self.path.name)

    def _run(self) -> None:
        if self.key is not None:
            self._run_sealed(self.key)
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "ab") as out:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                out.write(item)
                if self._queue.empty():
                    out.flush()

    def _run_sealed(self, key: StorageKey) -> None:
        """The same, each record sealed (one AES-GCM record per queued record; the final one at close)."""
        writer = SealedWriter(self.path, key)
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                writer.append(item)
                if self._queue.empty():
                    writer.flush()
        finally:
            writer.close()

    def close(self, timeout_s: float = 5) -> None:
        """Write what is queued and stop (blocking: call it from a thread)."""
        self._queue.put(None)
        self._thread.join(timeout_s)
