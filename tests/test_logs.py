"""Log lines cannot be forged: control characters a peer put in a field are escaped in both formats."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from common.logs import HumanFormatter, JsonFormatter

#: What a malicious agent reported as its hostname: a fake second log line, a terminal escape, C1 controls.
HOSTILE = "pc-1\n12:00:00 WARNING server.audit: admin logged in\r\x1b[2J\x07\x85\x9b\u2028tail"


def _record(msg: str = "inventory from %s", args: tuple[object, ...] = (HOSTILE,), **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("server.cmdb", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def _no_controls(text: str) -> None:
    bad = [c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029"]
    assert not bad, bad


@pytest.mark.parametrize("fmt", ["human", "json"])
def test_control_characters_in_message_and_fields_stay_on_one_line(fmt: str) -> None:
    """A newline, CR, ESC, BEL and C1 controls in the message and in extra fields come out escaped, one line."""
    formatter = HumanFormatter() if fmt == "human" else JsonFormatter()
    record = _record(hostname=HOSTILE, details={"name": HOSTILE}, count=3)
    line = formatter.format(record)
    assert "\n" not in line and "\r" not in line
    if fmt == "json":
        entry = json.loads(line)
        for value in (entry["msg"], entry["hostname"], entry["details"]["name"]):
            _no_controls(value)  # also after decoding: whoever prints the field prints no control
            assert "\\n12:00:00 WARNING" in value and "\\x1b[2J" in value and "\\x85" in value
        assert entry["count"] == 3
    else:
        _no_controls(line)
        assert "inventory from pc-1\\n12:00:00 WARNING server.audit" in line  # the message
        assert 'hostname="pc-1\\n12:00:00 WARNING server.audit' in line  # the field
        assert "\\x1b[2J\\x07\\x85\\x9b\\u2028tail" in line


def test_human_fields_cannot_forge_another_field() -> None:
    """A value with spaces or '=' is quoted, so ``extra`` fields cannot be faked inside one."""
    line = HumanFormatter().format(_record("x", (), device_id="d1", hostname="pc device_id=admin"))
    assert 'hostname="pc device_id=admin"' in line and line.count("device_id=d1") == 1


def test_tracebacks_stay_indented_under_their_line() -> None:
    """An exception message carrying a newline cannot start a line that looks like a new record."""
    try:
        raise ValueError("bad\n12:00:00 INFO    server: forged")
    except ValueError:
        record = logging.LogRecord("server", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    human = HumanFormatter().format(record).splitlines()
    assert human[0].endswith("failed") and all(line.startswith("  ") for line in human[1:])
    entry = json.loads(JsonFormatter().format(record))
    assert "forged" in entry["exc"]
