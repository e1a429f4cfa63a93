"""JSON responses encoded by msgspec (Structs, dataclasses and plain data alike)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web


def json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(value), status=status, content_type="application/json")
