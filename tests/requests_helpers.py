"""A device's control channel driven by hand (a real enrolled certificate, real mTLS, the real codec), for
the support-request tests: it sends exactly what a test wants — including malformed messages — and
collects what the server sends, with waits that poll a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from agent.state import AgentState
from certs import tls
from protocol import codec
from protocol.messages import Hello, Message, Ping, Pong

#: The smallest PNG: 1×1, opaque red.
PNG_1PX = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d7"
                        "63f8cfc0000003010100c9fe92ef0000000049454e44ae426082")


class DeviceChannel:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            self.received.append(data)
            if data.get("type") == "ping":
                await self.send(Pong(in_reply_to=data["id"]))

    async def send(self, message: Message) -> None:
        await self.ws.send_str(codec.encode(message))

    async def send_raw(self, data: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(data))

    async def wait_for(self, match: Callable[[dict[str, Any]], bool], *, timeout: float = 15.0,
                       after: int = 0, what: str = "a message") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for found in self.received[after:]:
                if match(found):
                    return found
            if self._reader.done():
                raise AssertionError(f"channel closed while waiting for {what}: {self.received[-3:]}")
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}; last received: {self.received[-3:]}")

    async def status(self, request_id: str | None = None, *, after: int = 0, **fields: Any) -> dict[str, Any]:
        def match(m: dict[str, Any]) -> bool:
            return m.get("type") == "request.status" and (request_id is None or m["request_id"] == request_id) \
                and all(m.get(k) == v for k, v in fields.items())
        return await self.wait_for(match, after=after, what=f"request.status {fields}")

    async def ping(self) -> None:
        """Round trip: everything sent before has been processed by the server."""
        ping = Ping()
        await self.send(ping)
        await self.wait_for(lambda m: m.get("type") == "pong" and m.get("in_reply_to") == ping.id, what="pong")


@contextlib.asynccontextmanager
async def device_channel(state: AgentState, agent_port: int) -> AsyncIterator[DeviceChannel]:
    ctx = tls.agent_client_context(state.ca_path, state.cert_path, state.key_path)
    async with aiohttp.ClientSession() as http, http.ws_connect(
            f"wss://localhost:{agent_port}/agent", ssl=ctx, max_msg_size=8 * 1024 * 1024) as ws:
        channel = DeviceChannel(ws)
        await channel.send(Hello(min_version=1, max_version=1, agent_version="test", device_id=state.device_id))
        await channel.wait_for(lambda m: m.get("type") == "welcome", what="welcome")
        try:
            yield channel
        finally:
            channel._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await channel._reader


class HookReceiver:
    """A local HTTP server taking webhook POSTs (the Slack/Teams incoming-webhook shape: JSON body, 200)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.fail_first = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503)
        self.posts.append((request.path, await request.json()))
        return web.Response(text="ok")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
