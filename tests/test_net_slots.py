"""Handshake admission control (server/net/slots.py): a bounded number in progress, FIFO waiters, the
listener told when to pause and resume accepting, and a stalled handshake giving its slot up after
``hold_s``. Without a network; the listeners under a flood: tests/test_connection_hygiene.py."""

from __future__ import annotations

import asyncio

import pytest

from server.net.slots import HandshakeSlots, Slot


async def test_waiters_are_served_in_order_and_the_listener_pauses_meanwhile() -> None:
    contention: list[bool] = []
    slots = HandshakeSlots(2, hold_s=60.0, on_contention=contention.append)
    first, second = await slots.acquire(), await slots.acquire()
    assert contention == [] and slots.held == 2
    order: list[str] = []

    async def wait(name: str) -> Slot:
        slot = await slots.acquire()
        order.append(name)
        return slot

    third, fourth = asyncio.create_task(wait("third")), asyncio.create_task(wait("fourth"))
    await asyncio.sleep(0)
    assert contention == [True] and slots.waiting == 2  # accepting pauses: the rest wait in the listen queue
    first.release()
    first.release()  # idempotent: the hold timer and the handshake's end race
    assert (await third) and order == ["third"] and slots.waiting == 1 and contention == [True]
    second.release()
    await fourth
    assert order == ["third", "fourth"] and contention == [True, False] and slots.held == 2
    assert slots.waited_total == 2


async def test_a_stalled_handshake_gives_its_slot_up_after_hold_s() -> None:
    """A client that sent its ClientHello and stalls cannot keep the gate shut for the handshake deadline."""
    slots = HandshakeSlots(1, hold_s=0.05, on_contention=lambda held: None)
    stalled = await slots.acquire()
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(slots.acquire(), 5)
    assert stalled.released and asyncio.get_running_loop().time() - started >= 0.04


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    """An evicted or timed-out connection waiting for a slot neither holds one nor keeps accepting paused."""
    contention: list[bool] = []
    slots = HandshakeSlots(1, hold_s=60.0, on_contention=contention.append)
    held = await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slots.waiting == 0 and contention == [True, False]
    held.release()
    assert slots.held == 0


def test_nonsense_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        HandshakeSlots(0, hold_s=1.0, on_contention=lambda held: None)
    with pytest.raises(ValueError):
        HandshakeSlots(1, hold_s=0.0, on_contention=lambda held: None)
