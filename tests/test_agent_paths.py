"""Server-chosen ids never leave their directory on the agent (issue 11, "also fix").

A malicious server once sent ``task.run`` with ``run_id: ".."``: the script action built
``state/task-work/..`` and removed it after the run — the agent's whole state directory. Three
layers now stop it: the wire type ``Id`` refuses dot-names, :func:`common.files.confined`
refuses anything but a plain name whose resolved path stays under its base, and every path the
agent builds from a message field goes through it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agent.tasks.catalog import CATALOG, parse_params
from agent.tasks.commands import ProcessRunner
from agent.tasks.context import ActionContext
from common.files import UnsafePath, confined
from protocol import codec
from protocol.errors import InvalidMessage
from protocol.messages import Error
from protocol.tasks import TaskRun
from server.agent_channel import AgentConnection
from tests.authority_helpers import make_org
from tests.harness import enroll_agent, running_agent, running_server, wait_until

BAD_NAMES = ["..", ".", "", ".hidden", "../x", "a/b", "/etc", "a\x00b", "a\\b", "x" * 201, "é", " a", "a\n"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_confined_refuses_names_that_are_not_plain(tmp_path: Path, name: str) -> None:
    """Dot-names, separators, NUL, non-ASCII, blanks and over-long names are refused before any path exists."""
    with pytest.raises(UnsafePath):
        confined(tmp_path, "task-work", name)


def test_confined_accepts_plain_ids_and_stays_under_base(tmp_path: Path) -> None:
    """Ids the server really makes (r_…, s-…, with dots and colons inside) map to a path below the base."""
    for name in ("r_0123abcd", "s-deadbeef", "diag-r_1.tar.gz", "a:b.c", "a.."):
        path = confined(tmp_path, "task-work", name)
        assert path.parent == (tmp_path / "task-work").resolve() and path.name == name


def test_confined_refuses_a_symlink_that_leads_out(tmp_path: Path) -> None:
    """A plain name is still refused when it resolves outside the base (a planted symlink)."""
    base = tmp_path / "state"
    base.mkdir()
    (base / "out").symlink_to(tmp_path)
    with pytest.raises(UnsafePath):
        confined(base, "out", "x")


@pytest.mark.parametrize("run_id", ["..", ".", ".x"])
def test_wire_id_refuses_dot_names(run_id: str) -> None:
    """The protocol's Id type refuses '.', '..' and a leading dot (its pattern used to let them through)."""
    frame = codec.encode(TaskRun(run_id=run_id, task_id="t_1", action="diagnostics", technician="a"))
    with pytest.raises(InvalidMessage):
        codec.decode(frame)
    ok = codec.decode(frame.replace(f'"run_id":"{run_id}"', '"run_id":"r_1.2"'))
    assert isinstance(ok, TaskRun) and ok.run_id == "r_1.2"


async def test_script_action_refuses_a_dot_dot_run_id_and_keeps_the_state_dir(tmp_path: Path) -> None:
    """Below the wire check too: the script action with run_id '..' refuses, runs nothing, removes nothing."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "device.key").write_text("key")
    marker = tmp_path / "ran"
    ctx = ActionContext(run_id="..", runner=ProcessRunner(), state_dir=state, timeout_s=10, output_cap=4096)
    spec = CATALOG["script"]
    with pytest.raises(UnsafePath):
        await spec.run(parse_params(spec, {"interpreter": "sh"}), ctx, f"touch {marker}\n")
    assert (state / "device.key").read_text() == "key" and not marker.exists()


async def test_malicious_server_dot_dot_run_id_is_refused_and_the_state_dir_survives(tmp_path: Path) -> None:
    """A raw task.run with run_id '..' (a script two approvers properly signed, replayed by a malicious server):
    the agent answers an error naming the message, runs nothing, and its state directory is intact."""
    async with running_server(tmp_path / "srv") as server:
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        errors: list[Error] = []

        async def on_error(_conn: AgentConnection, message: Error) -> None:
            errors.append(message)

        server.agent_handlers.register(Error, on_error)
        marker = tmp_path / "script-ran"
        script = f"touch {marker}\n"
        params: dict[str, Any] = {"interpreter": "sh"}
        authorization = make_org().task("task-evil-1", script=script, devices=[state.device_id], groups=[])
        run = TaskRun(task_id="t_evil", run_id="..", action="script", technician="alice", params=params,
                      script=script, authorization=authorization, timeout_s=30)
        before = sorted(p.name for p in state.directory.iterdir())
        async with running_agent(state) as agent:
            await wait_until(lambda: server.connections.get(state.device_id) is not None, what="agent online")
            await agent.client.ready.wait()
            conn = server.connections.get(state.device_id)
            assert conn is not None
            await conn.ws.send_str(codec.encode(run))
            await wait_until(lambda: any(e.in_reply_to == run.id for e in errors), what="the agent's error reply")
            reply = next(e for e in errors if e.in_reply_to == run.id)
            assert reply.code == "invalid" and "run_id" in reply.message
            # Refused as peer garbage: the channel stays up.
            assert server.connections.get(state.device_id) is conn
        assert state.directory.is_dir() and not marker.exists()
        assert state.key_path.exists() and os.stat(state.directory).st_mode & 0o777 == 0o700
        assert set(before) <= {p.name for p in state.directory.iterdir()}


def test_task_checks_refuse_a_run_id_that_is_not_a_plain_name() -> None:
    """A stored or hand-built task.run whose run id is not a plain name is refused with that reason."""
    from agent.tasks.authorize import Verdict, check_request

    verdict = check_request(TaskRun(run_id="..", task_id="t_1", action="diagnostics", technician="a"))
    assert isinstance(verdict, Verdict) and verdict.kind == "refuse" and "run id refused" in verdict.reason


def test_tunnel_url_refuses_a_session_id_that_is_not_a_plain_name(tmp_path: Path) -> None:
    """The session id goes into the tunnel's URL path: '..' never gets there."""
    from agent.config import AgentConfig
    from agent.consent.scripted import ScriptedConsentUI
    from agent.control_client import AgentClient
    from agent.sessions import AgentSessions
    from agent.state import AgentState

    state = AgentState(tmp_path)
    state.save_info({"device_id": "dev-1", "agent_url": "wss://server.example:8443/agent"})
    client = AgentClient(state, AgentConfig(state_dir=tmp_path))
    sessions = AgentSessions(client, ui=ScriptedConsentUI())
    assert sessions.tunnel_url("s-1") == "wss://server.example:8443/agent/tunnel/s-1"
    with pytest.raises(UnsafePath):
        sessions.tunnel_url("..")
