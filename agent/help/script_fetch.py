"""Fetch a self-service fix's script over the agent's own mTLS connection, checked before it is kept.

Like a release artifact (agent/update/download.py): the host and port are the control channel's, the
path is the SHA-256 the approvers signed; the bytes stream into a private temp file, more than
:data:`~protocol.requests.MAX_FIX_SCRIPT_BYTES` stops the transfer, and only bytes whose SHA-256 is the
signed one are renamed to ``<dir>/<sha256>`` (0600). Blocking (``http.client``): run it in a thread.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from agent.update.download import Source, fetch_checked
from protocol.requests import MAX_FIX_SCRIPT_BYTES, fix_script_path


def fetch(source: Source, context: ssl.SSLContext, *, sha256: str, directory: Path,
          timeout_s: float = 30.0) -> Path:
    """The script's path once fetched and checked; raises DigestMismatch, or OSError/HTTPException."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=f".{sha256[:16]}.", suffix=".part")
    part = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            fetch_checked(source, context, path=fix_script_path(sha256), sha256=sha256, out=out,
                          max_bytes=MAX_FIX_SCRIPT_BYTES, exact=False, what=f"fix script {sha256}",
                          signed_by="a fix script", timeout_s=timeout_s)
        target = directory / sha256
        os.replace(part, target)
        return target
    except BaseException:
        part.unlink(missing_ok=True)
        raise
