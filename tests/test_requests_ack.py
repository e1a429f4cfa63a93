"""A user's note survives a connection that drops around it (issue 18): kept until ``request.ack``, applied once.

A real server and a real agent (in-process); the server's ``request.add`` handler is wrapped so that a note's first
delivery never arrives (the connection drops as it is sent) and its second is applied but the connection drops
before the status and the acknowledgement leave the server. After the next reconnect the note is on the request
exactly once and the agent's outbox is empty; a withdrawal is acknowledged too.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.help.desk import Caller
from agent.help.wire import Open
from protocol.control import CloseCode
from protocol.requests import RequestAdd
from server.agent_channel import AgentConnection
from server.requests import repository as repo
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_help_request import short_dir


class Muted:
    """The connection as the handler sees it, with everything it sends lost (the drop came first)."""

    def __init__(self, conn: AgentConnection) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def send(self, _message: Any) -> None:
        return None

    async def reply_error(self, *_args: Any) -> None:
        return None


async def test_notes_cut_off_with_the_connection_are_delivered_once(tmp_path: Path) -> None:
    """A note lost on the way, resent after the reconnect, applied but its answer lost, resent again with the
    same message id: the request has it once and the agent's outbox is empty; the next note and a withdrawal
    are acknowledged at once."""
    with short_dir() as state_dir:
        async with running_server(tmp_path / "srv") as server:
            state = await enroll_agent(server, state_dir / "agent")
            config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0)
            async with running_agent(state, config) as agent:
                await wait_until(agent.client.ready.is_set, timeout=30, what="agent connected")
                desk = agent.parts.help
                assert desk is not None
                ann = Caller(os.getuid(), "ann")
                local_id = await desk.open(ann, Open(call=1, summary="Printer offline"))
                entry = desk.book.entries[local_id]
                await wait_until(lambda: entry.state == "waiting", timeout=15, what="the request's first status")

                seen: list[tuple[str, str]] = []
                drops: list[asyncio.Task[bool]] = []

                async def flaky(conn: AgentConnection, msg: RequestAdd) -> None:
                    seen.append((msg.id, msg.text))
                    if len(seen) == 1:  # lost on the way: nothing applied
                        drop(conn)
                    elif len(seen) == 2:  # applied, then the connection drops before the answer leaves
                        await original(Muted(conn), msg)  # type: ignore[arg-type]
                        drop(conn)
                    else:
                        await original(conn, msg)

                def drop(conn: AgentConnection) -> None:
                    drops.append(asyncio.ensure_future(
                        server.connections.close(conn.device_id, CloseCode.GOING_AWAY, "test drop")))

                original: Any = server.agent_handlers.replace(RequestAdd, flaky)
                await desk.add(ann, local_id, "It shows error 42")
                await wait_until(lambda: not entry.outbox, timeout=60, what="the note acknowledged")
                # lost; resent and applied, its answer lost; resent again: applied once, acknowledged
                assert len(seen) == 3 and len({mid for mid, _text in seen}) == 1, seen
                await desk.add(ann, local_id, "and the tray is empty")
                await wait_until(lambda: not entry.outbox, timeout=30, what="the second note acknowledged")
                assert len(seen) == 4

                row = await repo.by_local_id(server.db, state.device_id, local_id)
                assert row is not None
                notes = [e["detail"]["text"] for e in await repo.events_of(server.db, row["id"]) if e["kind"] == "note"]
                assert notes == ["It shows error 42", "and the tray is empty"]

                await desk.withdraw(ann, local_id)
                await wait_until(lambda: entry.state == "withdrawn" and not entry.outbox, timeout=30,
                                 what="the withdrawal applied and acknowledged")
                await asyncio.gather(*drops)
