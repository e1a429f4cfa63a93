"""Where audit records go: syslog over TLS (RFC 5425), a JSON-lines file, an HTTP endpoint.

Each sink's :meth:`send` returns once the batch is *acknowledged* — fsync'd to the file, a 2xx
from the endpoint, written and drained to the syslog receiver — and raises otherwise. Syslog
has no application-level acknowledgement: bytes drained into a connection that then breaks may
never have arrived, so :meth:`SyslogTls.rewind` names the oldest record sent over the broken
connection in the last :data:`REPLAY_S`, and the stream sends from there again (at least once:
a receiver drops repeats by ``seq``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import os
import ssl
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from .records import json_line, octet_counted, syslog_message

#: Records sent over a syslog connection this recently are sent again after it breaks.
REPLAY_S = 30.0
CONNECT_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 30.0


class Sink(Protocol):
    name: str
    destination: str

    async def send(self, records: list[dict[str, Any]]) -> None: ...

    def rewind(self) -> int | None: ...

    async def close(self) -> None: ...


class SyslogTls:
    """RFC 5425: TLS (server certificate verified, optional client certificate), octet-counted frames."""

    name = "syslog"

    def __init__(self, address: str, context: ssl.SSLContext, server_name: str, node: str) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.destination = address
        self.context = context
        self.server_name = server_name or self.host
        self.node = node
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        #: (seq, sent at) of what went over the current connection lately.
        self._sent: collections.deque[tuple[int, float]] = collections.deque(maxlen=100_000)
        self._rewind: int | None = None

    async def _connect(self) -> asyncio.StreamWriter:
        lost = self._reader is not None and self._reader.at_eof()
        if self._writer is not None and (self._writer.is_closing() or lost):
            # The connection died between sends: what went over it lately may not have arrived.
            self._broken(None)
            raise ConnectionResetError("the connection to the syslog receiver was lost")
        if self._writer is None:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as the
            # handshake fails, and the stream would then outlive the server's stop().
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.context,
                                                               server_hostname=self.server_name)
            self._writer = writer
            self._reader = reader
            self._sent.clear()
        return self._writer

    async def send(self, records: list[dict[str, Any]]) -> None:
        writer = await self._connect()
        try:
            writer.write(b"".join(octet_counted(syslog_message(r, self.node, os.getpid())) for r in records))
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await writer.drain()
            if writer.is_closing():  # drain() does not raise on a transport that was lost meanwhile
                raise ConnectionResetError("the connection to the syslog receiver was lost")
        except BaseException:
            self._broken(records[0]["seq"] if records else None)
            raise
        now = time.monotonic()
        self._sent.extend((r["seq"], now) for r in records)

    def _broken(self, unsent: int | None) -> None:
        cutoff = time.monotonic() - REPLAY_S
        recent = [seq for seq, at in self._sent if at >= cutoff]
        candidates = [s for s in (*recent, unsent) if s is not None]
        self._rewind = min(candidates) - 1 if candidates else None
        self._sent.clear()
        if self._writer is not None:
            self._writer.close()
        self._writer = None

    def rewind(self) -> int | None:
        rewind, self._rewind = self._rewind, None
        return rewind

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                async with asyncio.timeout(2):
                    await self._writer.wait_closed()
            self._writer = None


def syslog_context(ca: Path | None, client_cert: Path | None, client_key: Path | None) -> ssl.SSLContext:
    """Verifying client context: the receiver's certificate against ``ca`` (or the system's roots)."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert is not None:
        context.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
    return context


class JsonFile:
    """JSON lines appended to a file, fsync'd before the batch counts as delivered.

    At least once: a crash between the fsync and the cursor's write sends the batch again (a reader
    drops repeats by ``seq``); a failed write is cut back to the file's old size, so no half line stays."""

    name = "file"

    def __init__(self, path: Path, node: str) -> None:
        self.path = path
        self.destination = str(path)
        self.node = node

    async def send(self, records: list[dict[str, Any]]) -> None:
        data = b"".join(json_line(r, self.node) for r in records)
        await asyncio.to_thread(self._append, data)

    def _append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except BaseException:
                # A failed batch (disk full …) leaves no partial line: the retry appends it whole.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

    def rewind(self) -> int | None:
        return None

    async def close(self) -> None:
        return None


def check_url(url: str) -> None:
    """https, or plain http only to a loopback address (audit records carry who did what)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme == "http":
        host = parts.hostname or ""
        try:
            if ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            if host == "localhost":
                return
    raise ValueError(f"[siem] json_url must be https (or http to a loopback address): {parts.scheme}://{parts.hostname}")


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` of ``url``: no userinfo, query or fragment (tokens live there).

    What the logs and the cursor file name as the destination."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))


class JsonHttp:
    """JSON lines POSTed as ``application/x-ndjson``; any 2xx acknowledges the whole batch.

    Redirects are not followed (a 3xx is a failure): check_url vetted this URL only, and a redirect
    could send audit records to plain http on another host. At least once: a batch the endpoint
    stored but did not acknowledge in time (timeout, lost connection) is sent again."""

    name = "http"

    def __init__(self, url: str, ca: Path | None, node: str, authorization: str = "") -> None:
        check_url(url)
        self.url = url
        self.destination = redact_url(url)
        self.node = node
        self.context = ssl.create_default_context(cafile=str(ca) if ca else None)
        self.headers = {"Content-Type": "application/x-ndjson"}
        if authorization:
            self.headers["Authorization"] = authorization
        self._session: aiohttp.ClientSession | None = None

    async def send(self, records: list[dict[str, Any]]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S))
        data = b"".join(json_line(r, self.node) for r in records)
        async with self._session.post(self.url, data=data, ssl=self.context, headers=self.headers,
                                      allow_redirects=False) as resp:
            if not 200 <= resp.status < 300:
                raise ConnectionError(f"the endpoint answered {resp.status}")

    def rewind(self) -> int | None:
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
