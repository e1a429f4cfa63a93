"""Get help in service mode (issue 18): ``helpline help`` of a user → their session helper → the root service.

The real parts of tests/test_session_helper.py: two Unix users made for the test, a session helper
process for each (run as that user, with a private ``$XDG_RUNTIME_DIR``), the agent service as root with
``desktop = "helper"``, logind's stand-in, a real server. ``helpline help`` runs as the user too (the
same bind-mount and setpriv as the helper). The request reaches the server named after the user logind
and the kernel say the helper belongs to; each user lists only their own requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import wait_until
from tests.logind_standin import user_env
from tests.test_help_request import requests_of
from tests.test_session_helper import (
    REPO,
    USER_PYTHON,
    Desk,
    LocalUser,
    desk,  # noqa: F401 - fixture
    helper_process,
    root_service,
)

#: Run alone, after the parallel pass (scripts/test): creates local users (useradd).
pytestmark = pytest.mark.serial


@contextlib.contextmanager
def runtime_dirs(*users: LocalUser) -> Iterator[dict[str, Path]]:
    """A private XDG_RUNTIME_DIR (0700, the user's own) per user, as pam_systemd makes them."""
    base = Path(tempfile.mkdtemp(prefix="hl-rt-", dir="/tmp"))
    os.chmod(base, 0o755)
    made = {}
    try:
        for user in users:
            path = base / user.name
            path.mkdir(mode=0o700)
            os.chown(path, user.uid, user.gid)
            made[user.name] = path
        yield made
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_user(user: LocalUser, runtime: Path, socket_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``helpline ARGS`` run as ``user`` (own mount namespace with the checkout bound where they can read it)."""
    checkout = socket_dir.parent / "checkout"
    checkout.mkdir(mode=0o755, exist_ok=True)
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    path = os.pathsep.join([str(checkout), str(checkout / site.relative_to(REPO)) if site.is_relative_to(REPO)
                            else str(site)])
    env = user_env(str(user.home), user.name, {"PYTHONPATH": path, "XDG_RUNTIME_DIR": str(runtime)})
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount --bind -o ro "$1" "$2" && shift 2 && exec "$@"', "sh", str(REPO), str(checkout),
               "setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--",
               str(USER_PYTHON), "-m", "helpline", *args]
    return subprocess.run(command, env=env, cwd=user.home, capture_output=True, text=True, timeout=120)


@contextlib.asynccontextmanager
async def service(tmp_path: Path, desk: Desk, runtime: dict[str, Path]) -> AsyncIterator[Any]:  # noqa: F811
    async with root_service(tmp_path, desk) as (server, _state, agent, broker):
        with helper_process(desk.a, "c1", desk.xa.display, desk.socket, tmp_path / "helper-a.log",
                            {"XDG_RUNTIME_DIR": str(runtime[desk.a.name])}), \
                helper_process(desk.b, "c2", desk.xb.display, desk.socket, tmp_path / "helper-b.log",
                               {"XDG_RUNTIME_DIR": str(runtime[desk.b.name])}):
            await wait_until(lambda: set(broker.helpers) == {"c1", "c2"}, timeout=60,
                             what="both session helpers accepted")
            await wait_until(lambda: all((p / "helpline-help.sock").exists() for p in runtime.values()),
                             timeout=30, what="the helpers' help sockets")
            yield server, agent


async def test_help_goes_through_the_users_helper_and_names_that_user(tmp_path: Path, desk: Desk) -> None:  # noqa: F811
    """User a's ``helpline help --send`` reaches the server through a's helper and the service, with a as the
    requester; ``--list`` shows it to a only; the help socket is 0600 in a's private runtime directory."""
    desk.sessions(active="c1")
    with runtime_dirs(desk.a, desk.b) as runtime:
        async with service(tmp_path, desk, runtime) as (server, agent):
            sock = runtime[desk.a.name] / "helpline-help.sock"
            assert sock.stat().st_mode & 0o777 == 0o600 and sock.stat().st_uid == desk.a.uid
            sent = await asyncio.to_thread(as_user, desk.a, runtime[desk.a.name], desk.socket_dir, "help", "--send",
                                           "printer offline", "--urgency", "high", "--no-screenshot")
            assert sent.returncode == 0, sent.stderr
            found: list[dict[str, Any]] = []

            async def arrived() -> bool:
                found[:] = await requests_of(server)
                return bool(found)

            await wait_until(arrived, timeout=30, what="the request at the server")
            assert found[0]["requester"] == desk.a.name and found[0]["urgency"] == "high"
            book = agent.parts.help.book
            assert [e.uid for e in book.entries.values()] == [desk.a.uid]
            await wait_until(lambda: all(e.number for e in book.entries.values()), timeout=15,
                             what="request.status at the device")

            mine = await asyncio.to_thread(as_user, desk.a, runtime[desk.a.name], desk.socket_dir, "help", "--list")
            assert mine.returncode == 0, mine.stderr
            assert "printer offline" in mine.stdout and "waiting" in mine.stdout
            theirs = await asyncio.to_thread(as_user, desk.b, runtime[desk.b.name], desk.socket_dir, "help", "--list")
            assert theirs.returncode == 0, theirs.stderr
            assert theirs.stdout.strip() == ""
