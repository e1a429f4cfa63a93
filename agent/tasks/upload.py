"""Uploading run artifacts (the diagnostics bundle) to the server over the control channel.

Stop-and-wait: ``task.artifact.begin`` tells the server the size and sha256 and learns where
to continue; then one chunk of at most 256 KiB goes out per ``task.artifact.ack``, so other
control messages are never stuck behind megabytes. Pending uploads live in the task ledger
(SQLite) and restart on every connection, resuming at the chunk the server asks for, until
the server says stored or refused.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from protocol.messages import Message
from protocol.tasks import ARTIFACT_CHUNK_BYTES, TaskArtifactAck, TaskArtifactBegin, TaskArtifactChunk

from .store import PendingArtifact, TaskLedger

if TYPE_CHECKING:
    from agent.control_client import AgentClient

log = logging.getLogger(__name__)

#: How long one ack may take before this connection's upload gives up (it resumes on the next).
ACK_TIMEOUT_S = 60.0


def _read_chunk(artifact: PendingArtifact, index: int, chunk_size: int) -> bytes:
    with artifact.path.open("rb") as fh:
        fh.seek(index * chunk_size)
        return fh.read(chunk_size)


def _file_sha256(artifact: PendingArtifact) -> str:
    digest = hashlib.sha256()
    with artifact.path.open("rb") as fh:
        while block := fh.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


class ArtifactUploader:
    def __init__(self, client: AgentClient, ledger: Callable[[], TaskLedger]) -> None:
        self.client = client
        self._ledger = ledger
        self.chunk_size = ARTIFACT_CHUNK_BYTES
        self.wake = asyncio.Event()
        self._waiting: dict[str, asyncio.Future[TaskArtifactAck]] = {}

    async def on_ack(self, message: TaskArtifactAck) -> None:
        future = self._waiting.pop(message.run_id, None)
        if future is None or future.done():
            log.info("unexpected artifact ack", extra={"run_id": message.run_id, "status": message.status})
            return
        future.set_result(message)

    async def run(self) -> None:
        """Upload everything pending, then wait for more; runs per connection (cancelled when it drops)."""
        while True:
            self.wake.clear()
            for artifact in await asyncio.to_thread(self._ledger().pending_artifacts):
                try:
                    await self.upload(artifact)
                except TimeoutError:
                    log.warning("artifact upload stalled; retrying on the next connection",
                                extra={"run_id": artifact.run_id})
                    return
                except ConnectionError:
                    return
            await self.wake.wait()

    async def _request(self, run_id: str, message: Message) -> TaskArtifactAck:
        future: asyncio.Future[TaskArtifactAck] = asyncio.get_running_loop().create_future()
        self._waiting[run_id] = future
        try:
            await self.client.send(message)
            return await asyncio.wait_for(future, ACK_TIMEOUT_S)
        finally:
            self._waiting.pop(run_id, None)

    async def upload(self, artifact: PendingArtifact) -> None:
        ledger = self._ledger()
        try:
            digest = await asyncio.to_thread(_file_sha256, artifact)
        except OSError as exc:
            log.warning("artifact gone before upload", extra={"run_id": artifact.run_id, "error": str(exc)})
            await asyncio.to_thread(ledger.set_artifact_state, artifact.run_id, "refused", f"file unreadable: {exc}")
            return
        if digest != artifact.sha256:
            log.warning("artifact changed on disk since the run", extra={"run_id": artifact.run_id})
        size, chunk_size = artifact.size, self.chunk_size
        total = max(1, math.ceil(size / chunk_size))
        ack = await self._request(artifact.run_id, TaskArtifactBegin(
            run_id=artifact.run_id, size=size, sha256=artifact.sha256, chunk_size=chunk_size))
        while ack.status == "continue":
            if ack.next_index >= total:
                log.warning("server asked for a chunk past the end", extra={"run_id": artifact.run_id,
                                                                           "index": ack.next_index})
                return
            data = await asyncio.to_thread(_read_chunk, artifact, ack.next_index, chunk_size)
            ack = await self._request(artifact.run_id, TaskArtifactChunk(
                run_id=artifact.run_id, index=ack.next_index, total=total, data=base64.b64encode(data).decode()))
        await asyncio.to_thread(ledger.set_artifact_state, artifact.run_id, ack.status, ack.reason)
        log.info("artifact upload ended", extra={"run_id": artifact.run_id, "status": ack.status,
                                                 "reason": ack.reason})
