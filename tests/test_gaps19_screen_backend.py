"""The screen backend of a root service whose session helper comes later (issue 14 gap).

At boot the service connects before anyone logs in: its hello names no backend. When the user's
helper checks in (a real Unix user, a real ``helpline agent session-helper`` on Xvfb) the service
sends ``device.screen_backend`` on the same connection, the server stores it in ``devices`` and the
device API shows it — no reconnection; when the helper goes away it says "none" again. Also: the
message is validated (an unknown backend name is refused by the codec). A helper on a ScreenCast-only
portal (view-only) makes the device view-only in the server's record: control is refused at request time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol import codec
from protocol.control import CloseCode
from protocol.errors import InvalidMessage
from protocol.screen_backend import VIEW_ONLY, ScreenBackendChanged
from tests.harness import wait_until
from tests.test_session_helper import Desk, agent_config, desk, helper_process, root_service  # noqa: F401 - fixture
from tests.test_session_helpers import api

#: Run alone, after the parallel pass (scripts/test): creates local users (useradd).
pytestmark = pytest.mark.serial


def test_the_message_names_only_known_backends() -> None:
    """``device.screen_backend`` round-trips x11 and "" (none); a made-up backend is an invalid message."""
    for name in ("x11", "wayland-mutter", "wayland-portal", ""):
        message = ScreenBackendChanged(backend=name)  # type: ignore[arg-type]
        assert codec.decode(codec.encode(message)) == message
    with pytest.raises(InvalidMessage):
        codec.decode('{"type": "device.screen_backend", "v": 1, "id": "a1", "backend": "vnc"}')


async def test_a_helper_arriving_after_the_hello_updates_the_device(tmp_path: Path, desk: Desk) -> None:  # noqa: F811
    """No helper at the hello: screen_backend null. User a's helper checks in: x11 in the API and the devices row,
    on the first connection still. The helper stops: null again."""
    desk.sessions(active="c1")
    async with root_service(tmp_path, desk) as (server, state, agent, broker):
        path = f"/api/v1/devices/{state.device_id}"

        async def backend() -> str | None:
            status, body = await api(server, "GET", path, "ann")
            assert status == 200, body
            return body["screen_backend"]  # type: ignore[no-any-return]

        async def stored() -> bool:
            row = await server.db.fetchone("SELECT screen_backend_at FROM devices WHERE id = ?",
                                           (state.device_id,))
            return row is not None and row["screen_backend_at"] is not None

        await wait_until(stored, timeout=30, what="the hello's word stored")
        assert await backend() is None
        with helper_process(desk.a, "c1", desk.xa.display, desk.socket, tmp_path / "helper-a.log"):
            await wait_until(lambda: "c1" in broker.helpers, timeout=60, what="the helper accepted")

            async def is_x11() -> bool:
                return await backend() == "x11"

            await wait_until(is_x11, timeout=30, what="screen_backend x11 after the helper checked in")
            row = await server.db.fetchone("SELECT screen_backend FROM devices WHERE id = ?", (state.device_id,))
            assert row is not None and row["screen_backend"] == "x11"
            assert agent.client.connections == 1  # told on the same connection, not at a reconnection
        await wait_until(lambda: not broker.helpers, timeout=30, what="the helper gone")

        async def is_none() -> bool:
            return await backend() is None

        await wait_until(is_none, timeout=30, what="screen_backend null after the helper left")
        assert agent.client.connections == 1


def scripted(stand: Desk, backend: str, view_only: bool) -> list[str]:
    """tests/scripted_helper.py for session c1 (user a): says ``backend`` and ``view_only`` in its hello."""
    return ["tests.scripted_helper", str(stand.socket), "c1", stand.xa.display, backend, "1" if view_only else "0"]


async def test_a_view_only_helper_makes_the_device_view_only_and_control_is_refused(
        tmp_path: Path, desk: Desk) -> None:  # noqa: F811
    """The root service's hello names nothing; a helper says wayland-portal + view-only: the change reaches the
    server on the same connection, the device API says ``screen_view_only: true`` and a control request is refused
    409 ``device_view_only`` — from the stored record, the live hello predates the helper. The next hello carries
    ``screen.view-only`` too. A replacing helper of the same session, same backend, not view-only: the change
    (view-only alone) is sent and clears it; control is offered again — the change outranks the connection's
    hello, which still says ``screen.view-only``."""
    desk.sessions(active="c1")
    async with root_service(tmp_path, desk) as (server, state, agent, broker):
        device = f"/api/v1/devices/{state.device_id}"

        async def record() -> tuple[str | None, bool]:
            status, body = await api(server, "GET", device, "ann")
            assert status == 200, body
            return body["screen_backend"], body["screen_view_only"]

        async def control() -> tuple[int, dict]:  # type: ignore[type-arg]
            return await api(server, "POST", f"{device}/sessions", "ann",  # type: ignore[no-any-return]
                             {"mode": "control", "reason": "fix the printer"})

        async def stored() -> bool:
            row = await server.db.fetchone("SELECT screen_backend_at FROM devices WHERE id = ?", (state.device_id,))
            return row is not None and row["screen_backend_at"] is not None

        await wait_until(stored, timeout=30, what="the hello's word stored")
        assert await record() == (None, False)
        with helper_process(desk.a, "c1", desk.xa.display, desk.socket, tmp_path / "helper-a.log",
                            module=scripted(desk, "wayland-portal", True)):
            await wait_until(lambda: "c1" in broker.helpers, timeout=60, what="the view-only helper accepted")

            async def view_only() -> bool:
                return await record() == ("wayland-portal", True)

            await wait_until(view_only, timeout=30, what="screen_view_only true after the helper checked in")
            row = await server.db.fetchone("SELECT screen_view_only FROM devices WHERE id = ?", (state.device_id,))
            assert row is not None and row["screen_view_only"] == 1
            conn = server.connections.get(state.device_id)
            assert conn is not None and conn.hello is not None and VIEW_ONLY not in conn.hello.capabilities
            assert agent.client.connections == 1
            status, body = await control()
            assert status == 409 and body["error"]["code"] == "device_view_only", body
            assert await server.db.fetchall("SELECT id FROM sessions WHERE device_id = ?", (state.device_id,)) == []

            # A new connection: the root service's hello itself says screen.view-only now.
            await conn.close(CloseCode.GOING_AWAY, "test: reconnect")

            def hello_says_view_only() -> bool:
                live = server.connections.get(state.device_id)
                return live is not None and live is not conn and live.hello is not None \
                    and VIEW_ONLY in live.hello.capabilities

            await wait_until(hello_says_view_only, timeout=60, what="the next hello with screen.view-only")
            await wait_until(view_only, timeout=30, what="still view-only after the hello")
        with helper_process(desk.a, "c1", desk.xa.display, desk.socket, tmp_path / "helper-a2.log",
                            module=scripted(desk, "wayland-portal", False)):

            async def not_view_only() -> bool:
                return await record() == ("wayland-portal", False)

            await wait_until(not_view_only, timeout=60, what="screen_view_only false after a helper without it")
            status, body = await control()
            assert status == 201, body
