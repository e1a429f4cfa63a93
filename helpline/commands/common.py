"""Options and helpers shared by subcommands (the server's modules are imported only when used)."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from common.config import ConfigError, load_config

if TYPE_CHECKING:
    from server.config import ServerConfig
    from server.store import Database

T = TypeVar("T")

DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w`` → seconds."""
    match = DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30m, 24h or 7d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML config file ([server] table)")
    parser.add_argument("--data", type=Path, help="data directory (database, PKI); default /var/lib/helpline")


def server_config(args: argparse.Namespace, **overrides: Any) -> ServerConfig:
    from server.config import ServerConfig, load_sections

    path = getattr(args, "config", None)
    config = load_config(ServerConfig, path, section="server",
                         overrides={"data_dir": getattr(args, "data", None), **overrides})
    return load_sections(config, path)  # [metrics], [siem]


def with_database(config: ServerConfig, work: Callable[[Database], Awaitable[T]]) -> T:
    """Open the server's database (same one the running server uses), run ``work``, close."""
    from server.store import open_database

    async def runner() -> T:
        if config.db_url.startswith("sqlite:///") and not Path(config.db_url.removeprefix("sqlite:///")).parent.exists():
            raise ConfigError(f"no data directory at {config.data_dir}: run 'helpline certs init' or the server first")
        db = await open_database(config.db_url)
        if config.data_dir.is_dir():  # what this command appends advances the server's anchor too
            from server import audit

            audit.attach_anchor(db, audit.anchor_path(config.data_dir))
        from server.bus.events import ring_after_commits

        db, bus = await ring_after_commits(db, config)  # nats_url: the nodes hear of a revocation at once
        try:
            return await work(db)
        finally:
            await db.close()
            if bus is not None:
                await bus.close()

    return asyncio.run(runner())


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))
