"""Every warning says why (issue 12): no more "periodic inventory not delivered: " with nothing after it."""

from __future__ import annotations

from agent import reporting
from common.outage import reason


def test_inventory_timeout_names_the_wait() -> None:
    """asyncio.wait_for raises a TimeoutError without a message: the warning says what timed out and after how long."""
    assert reporting._undelivered(TimeoutError()) == (
        f"timeout after {reporting.ACK_TIMEOUT_S:.0f} s without inventory.ack")


def test_other_failures_give_type_and_message() -> None:
    """A dropped connection gives its type and message; an exception without a message gives its type."""
    assert reporting._undelivered(ConnectionError("control channel is not connected")) == (
        "ConnectionError: control channel is not connected")
    assert reason(ConnectionResetError()) == "ConnectionResetError"

