"""A small HTTP CONNECT proxy for tests: Basic authentication, and a record of every tunnel.

It behaves as corporate proxies do for ``CONNECT``: ``407`` with ``Proxy-Authenticate`` without
the right credentials, ``200 Connection established`` and a byte pump otherwise. It records the
target and the first bytes the client sent inside each tunnel (a TLS record, if all is well).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass, field

MAX_HEAD = 8192


@dataclass
class Tunnel:
    host: str
    port: int
    first_bytes: bytes = b""


@dataclass
class ConnectProxy:
    username: str = ""
    password: str = ""
    tunnels: list[Tunnel] = field(default_factory=list)
    refused: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    def _authorized(self, headers: dict[str, str]) -> bool:
        if not (self.username or self.password):
            return True
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return headers.get("proxy-authorization", "") == f"Basic {expected}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            if not self._authorized(headers):
                self.refused += 1
                writer.write(b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="t"\r\n'
                             b"Content-Length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            upstream_reader, upstream_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            tunnel = Tunnel(host.strip("[]"), int(port))
            self.tunnels.append(tunnel)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(self._pump(reader, upstream_writer, tunnel), self._pump(upstream_reader, writer, None))
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tunnel: Tunnel | None) -> None:
        try:
            while data := await reader.read(65536):
                if tunnel is not None and not tunnel.first_bytes:
                    tunnel.first_bytes = data[:8]
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()
