"""The Wayland consent UI's X probe: an X display that accepts and never answers costs one daemon
thread, never a worker of the loop's default executor, and is not probed again while it hangs."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from agent.consent import select


@pytest.fixture
def silent_x_server() -> object:
    """A TCP 'X server' on 127.0.0.1:6000+N that accepts connections and never says a word."""
    listener = None
    for number in range(90, 140):
        candidate = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            candidate.bind(("127.0.0.1", 6000 + number))
        except OSError:
            candidate.close()
            continue
        listener = candidate
        break
    assert listener is not None, "no free X TCP port in 6090-6139"
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # kept open, never answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1] - 6000}"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    listener.close()


async def test_hung_display_costs_one_daemon_thread(silent_x_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "X_PROBE_TIMEOUT_S", 0.5)
    assert await select.x_reachable(silent_x_server) is False
    probes = [t for t in threading.enumerate() if t.name == f"x-probe {silent_x_server}"]
    assert len(probes) == 1 and probes[0].daemon, "the hung probe runs on its own daemon thread"
    # Asked again while the first probe hangs: answered at once, no second thread.
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await select.x_reachable(silent_x_server) is False
    assert loop.time() - started < 0.2
    assert len([t for t in threading.enumerate() if t.name == f"x-probe {silent_x_server}"]) == 1
    # The default executor is untouched: a burst of to_thread calls still runs at once.
    results = await asyncio.wait_for(asyncio.gather(*(asyncio.to_thread(lambda: 1) for _ in range(64))), 5)
    assert sum(results) == 64


async def test_no_display_is_not_probed() -> None:
    assert await select.x_reachable(None) is False
    assert await select.x_reachable("") is False
