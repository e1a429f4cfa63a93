"""TOML configuration with ``HELPLINE_*`` environment overrides.

Precedence (lowest first): dataclass defaults, the TOML file, environment variables,
command-line flags. ``HELPLINE_AGENT_PORT=9443`` overrides ``agent_port``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration file or an override is invalid; the message says which key."""


def _coerce(name: str, raw: Any, target: Any) -> Any:
    origin = typing.get_origin(target)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(target) if a is not type(None)]
        if raw is None or raw == "":
            return None
        target = options[0]
        origin = typing.get_origin(target)
    try:
        if target is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if target is int:
            return int(raw)
        if target is float:
            return float(raw)
        if target is Path:
            return Path(str(raw)).expanduser()
        if target is str:
            return str(raw)
        if origin is list:
            (item,) = typing.get_args(target)
            items = raw if isinstance(raw, list) else [p.strip() for p in str(raw).split(",") if p.strip()]
            return [_coerce(name, i, item) for i in items]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: cannot use {raw!r} as {getattr(target, '__name__', target)}") from exc
    return raw


def load_config(cls: type[T], path: Path | None, *, section: str | None = None, env_prefix: str = "HELPLINE_",
                overrides: dict[str, Any] | None = None) -> T:
    """Build ``cls`` (a dataclass) from defaults, TOML ``path`` (optionally a [section]), env and overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        if section is not None:
            data = data.get(section, {})
        values.update(data)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - fields
    if unknown:
        raise ConfigError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
    for name in fields:
        env = os.environ.get(env_prefix + name.upper())
        if env is not None:
            values[name] = env
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    coerced = {name: _coerce(name, value, hints[name]) for name, value in values.items()}
    return cls(**coerced)
