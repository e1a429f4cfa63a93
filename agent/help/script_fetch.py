"""Fetch a self-service fix's script over the agent's own mTLS connection, checked before it is kept.

Like a release artifact (agent/update/download.py): the host and port are the control channel's, the
path is the SHA-256 the approvers signed; the bytes stream into a private temp file, more than
:data:`~protocol.requests.MAX_FIX_SCRIPT_BYTES` stops the transfer, and only bytes whose SHA-256 is the
signed one are renamed to ``<dir>/<sha256>`` (0600). Blocking (``http.client``): run it in a thread.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from pathlib import Path

from agent.update.download import CHUNK, DigestMismatch, Source
from common.proxy import https_connection
from protocol.requests import MAX_FIX_SCRIPT_BYTES, fix_script_path


def fetch(source: Source, context: ssl.SSLContext, *, sha256: str, directory: Path,
          timeout_s: float = 30.0) -> Path:
    """The script's path once fetched and checked; raises DigestMismatch, or OSError/HTTPException."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=f".{sha256[:16]}.", suffix=".part")
    part, digest, received = Path(name), hashlib.sha256(), 0
    connection = https_connection(source.host, source.port, context=context, timeout=timeout_s, setting=source.proxy)
    try:
        with os.fdopen(fd, "wb") as out:
            connection.request("GET", fix_script_path(sha256))
            response = connection.getresponse()
            if response.status != 200:
                body = response.read(512).decode(errors="replace")
                raise OSError(f"the server answered {response.status} for fix script {sha256}: {body}")
            while chunk := response.read(CHUNK):
                received += len(chunk)
                if received > MAX_FIX_SCRIPT_BYTES:
                    raise DigestMismatch(f"more than the {MAX_FIX_SCRIPT_BYTES} bytes a fix script may have")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise DigestMismatch(f"SHA-256 {digest.hexdigest()} is not the signed {sha256}")
        target = directory / sha256
        os.replace(part, target)
        return target
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        connection.close()
