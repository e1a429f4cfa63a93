"""Serve a stored file over HTTP, unsealing it on the way (the file stays sealed on disk)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from .sealed import SealedReader, StorageKey

log = logging.getLogger(__name__)


async def send_file(request: web.Request, path: Path, key: StorageKey | None,
                    headers: dict[str, str]) -> web.StreamResponse:
    """Stream ``path``'s plaintext; decryption and disk reads run in a thread, a chunk at a time.

    A sealed file without its final record (a session cut short by a crash) is sent as far as it
    goes, with a warning in the log; a record that fails authentication ends the response early
    (the client sees a short body, the log says which file).
    """
    reader = SealedReader(path, key)
    chunks = iter(reader)
    first = await asyncio.to_thread(next, chunks, None)  # a SealError surfaces before any byte is sent
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    chunk = first
    while chunk is not None:
        await response.write(chunk)
        chunk = await asyncio.to_thread(next, chunks, None)
    await response.write_eof()
    if not reader.complete:
        log.warning("a sealed file was served without its final record (cut short?)", extra={"file": path.name})
    return response
