"""Fetch a release artifact over the agent's own mTLS connection, checked while it streams.

The URL is never the server's choice: the host and port are the ones of the agent's control channel
(its enrollment), the path names the SHA-256 the approvers signed. Bytes go to a private file; more
than the signed size stops the transfer at once, and the SHA-256 is compared before anyone may use
the file. Blocking (``http.client``): run it in a thread.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from common.proxy import https_connection
from protocol.update import artifact_path

CHUNK = 256 * 1024


class DigestMismatch(Exception):
    """The bytes are not the ones the manifest signed (size or SHA-256): the device refuses them."""


@dataclass(frozen=True)
class Source:
    """Where the agent's server listens (from the control channel's URL)."""

    host: str
    port: int
    #: The agent's proxy setting (common/proxy.py).
    proxy: str = ""

    @classmethod
    def from_agent_url(cls, url: str, proxy: str = "") -> Source:
        parts = urlsplit(url)
        if parts.scheme != "wss" or not parts.hostname:
            raise ValueError(f"not a wss:// agent URL: {url!r}")
        return cls(parts.hostname, parts.port or 443, proxy)


def fetch(source: Source, context: ssl.SSLContext, *, sha256: str, size: int, dest: Path,
          timeout_s: float = 60.0) -> None:
    """Stream the artifact into ``dest`` (0600); raises DigestMismatch, or OSError/HTTPException on I/O failure.

    ``dest`` is removed on any failure, so nothing half-checked stays behind.
    """
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            fetch_checked(source, context, path=artifact_path(sha256), sha256=sha256, out=out, max_bytes=size,
                          exact=True, what="the artifact", signed_by="the manifest", timeout_s=timeout_s)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def fetch_checked(source: Source, context: ssl.SSLContext, *, path: str, sha256: str, out: BinaryIO,
                  max_bytes: int, exact: bool, what: str, signed_by: str, timeout_s: float) -> None:
    """GET ``path`` over the agent's mutual TLS into ``out`` (flushed and fsynced), checking it as it streams.

    More than ``max_bytes`` stops the transfer (``exact``: fewer is refused too); the SHA-256 must be the
    signed one. The caller removes ``out``'s file on any exception: nothing half-checked is ever used.
    """
    digest, received = hashlib.sha256(), 0
    connection = https_connection(source.host, source.port, context=context, timeout=timeout_s, setting=source.proxy)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        if response.status != 200:
            body = response.read(512).decode(errors="replace")
            raise OSError(f"the server answered {response.status} for {what}: {body}")
        declared = response.getheader("Content-Length")
        if exact and declared is not None and declared.isdigit() and int(declared) != max_bytes:
            raise DigestMismatch(f"the server sends {declared} bytes, {signed_by} signed {max_bytes}")
        while chunk := response.read(CHUNK):
            received += len(chunk)
            if received > max_bytes:
                raise DigestMismatch(f"more than the {max_bytes} bytes {signed_by} allows")
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
        if exact and received != max_bytes:
            raise DigestMismatch(f"{received} bytes received, {signed_by} signed {max_bytes}")
        if digest.hexdigest() != sha256:
            raise DigestMismatch(f"SHA-256 {digest.hexdigest()} is not the signed {sha256}")
    finally:
        connection.close()
