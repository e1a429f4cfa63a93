"""`helpline agent inventory --json` prints exactly the message the agent would send."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.reporting import Acked, acked_path, write_acked
from helpline.cli import main
from protocol import codec
from protocol.messages import InventoryReport


def test_prints_full_then_empty_delta_once_acked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no ack on record the output is a full report the codec accepts; after an ack of the same
    checksums it is a delta with no sections."""
    assert main(["agent", "inventory", "--json", "--state", str(tmp_path)]) == 0
    first = codec.decode(json.dumps(json.loads(capsys.readouterr().out)))
    assert isinstance(first, InventoryReport) and first.full and set(first.sections) == set(first.checksums)
    write_acked(acked_path(tmp_path), Acked(dict(first.checksums), time.time()))
    assert main(["agent", "inventory", "--json", "--state", str(tmp_path)]) == 0
    again = codec.decode(capsys.readouterr().out)
    assert isinstance(again, InventoryReport) and not again.full
    assert "software" not in again.sections and "identity" not in again.sections  # only what moved between runs
