"""Structured logging: readable lines by default, one JSON object per line with --log-format json.

Log lines cannot be forged. Much of what is logged comes from peers (an agent's hostname, a
login name, a reason an agent sent), and a newline in such a field once let a malicious agent
write a line that looked like the server's own. So in both formats every control character —
C0 (``\\n``, ``\\r``, ESC …), DEL, C1 and the Unicode line/paragraph separators — in the
message and in every extra field is written as a visible escape (``\\n``, ``\\x1b``,
``\\u2028``); in JSON the *decoded* strings hold the escapes too, so a tool that prints a field
prints no control either. In the human format a value with a space, ``"`` or ``=`` is quoted so
one field cannot fake another, and traceback lines are indented under their record.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from types import TracebackType
from typing import Any

_RESERVED = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_QUOTES = re.compile(r'[\s"=]')

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escape(text: str) -> str:
    """``text`` with every control character written as a visible escape (one line, no terminal codes)."""
    return _CONTROL.sub(_escape_char, text)


def _clean(value: Any) -> Any:
    """A JSON-ready copy of ``value`` whose strings (keys too) hold no control characters."""
    if isinstance(value, str):
        return escape(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {escape(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    return escape(str(value))


def _indented(text: str) -> str:
    """Multi-line text (a traceback) as lines indented under the record, controls escaped."""
    return "\n".join("  " + escape(line) for line in text.splitlines())


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extra(record))
        entry = _clean(entry)
        if record.exc_info:
            # A traceback keeps its lines (JSON encodes the newlines); other controls are escaped.
            entry["exc"] = "\n".join(escape(line) for line in self.formatException(record.exc_info).splitlines())
        return json.dumps(entry, default=str)


class HumanFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = escape(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

    def formatException(self, ei: ExcInfo) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _extra(record)
        if extra:
            fields = " ".join(f"{escape(str(k))}={_value(v)}" for k, v in extra.items())
            head, sep, rest = line.partition("\n")  # fields stay on the record's line, before any traceback
            line = f"{head} {fields}{sep}{rest}"
        return line


def _value(value: Any) -> str:
    text = escape(value if isinstance(value, str) else str(value))
    if not text or _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '\\"') + '"'
    return text


def setup_logging(fmt: str = "human", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)
