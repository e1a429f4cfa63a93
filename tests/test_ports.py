"""helpline.ports.free_port: test processes never choose the same port, nor one process the same port twice."""

from __future__ import annotations

import socket

import pytest

from helpline import ports


def test_xdist_workers_draw_from_disjoint_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """gw0 and gw1 (and any gwN) choose from slices of the range that do not overlap."""
    seen: dict[str, set[int]] = {}
    for worker in ("gw0", "gw1", "gw9"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        low, high = ports._port_range()
        assert ports.PORT_RANGE[0] <= low < high <= ports.PORT_RANGE[1]
        seen[worker] = {ports.free_port() for _ in range(30)}
        assert all(low <= port <= high for port in seen[worker])
    assert not seen["gw0"] & seen["gw1"] and not seen["gw1"] & seen["gw9"] and not seen["gw0"] & seen["gw9"]
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert ports._port_range() == ports.PORT_RANGE


def test_a_port_handed_out_is_not_handed_out_again_before_it_is_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two choices before either is bound (an agent and a console port) never coincide, even in a tiny range."""
    monkeypatch.setattr(ports, "PORT_RANGE", (29990, 29999))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.setattr(ports, "_recent", [])
    chosen = [ports.free_port() for _ in range(5)]
    assert len(set(chosen)) == 5
    for port in chosen:  # and each was free when chosen
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
