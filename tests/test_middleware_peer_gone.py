"""A request whose peer went away mid-way (a reset while writing, a broken pipe) is counted in one
line per interval, not logged as an unhandled error with a traceback per request (a reconnect herd
under overload made hundreds of them); any other failure is still an error with its traceback."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server.api import middleware


def _app() -> web.Application:
    async def reset(_request: web.Request) -> web.Response:
        raise ConnectionResetError("Cannot write to closing transport")

    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("a real bug")

    app = web.Application(middlewares=[middleware.errors])
    app.router.add_get("/agent/reset", reset)
    app.router.add_get("/api/broken", broken)
    return app


async def test_peer_gone_is_counted_quietly_and_bugs_still_log(caplog: pytest.LogCaptureFixture) -> None:
    before = middleware._gone_log.total["agent"]
    async with TestClient(TestServer(_app())) as client:
        with caplog.at_level(logging.INFO, logger="server.api.middleware"):
            for _ in range(3):
                response = await client.get("/agent/reset")
                assert response.status == 400 and (await response.json())["error"]["code"] == "gone"
            assert middleware._gone_log.total["agent"] == before + 3
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
            assert not [r for r in caplog.records if r.exc_info], "a traceback for a peer going away"
            response = await client.get("/api/broken")
            assert response.status == 500
            assert [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info], "a bug went unlogged"
