"""Self-update tests' parts: release artifacts made from this checkout, signed manifests, agents run by the
real launcher from an installation root the test creates, and waits on what the server records.

An artifact is a ``.tar.gz`` of the checkout's packages with ``common/version.py`` saying the release's
version (``broken``: its ``helpline/cli.py`` exits at once, or ``hang``: never connects). The installation
root starts empty: the launcher then runs the *base* version, this checkout (0.1.0) in the test's
interpreter, as a package's own version runs from its site-packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.enroll import enroll
from agent.state import AgentState
from certs.pki import CertificateAuthority
from protocol.authority import Artifact, ReleaseManifest, SignedDocument
from server import devices
from server.app import HelplineServer
from server.authority import repository as documents
from server.updates import repository, service
from tests.authority_helpers import Org
from tests.harness import console_url, new_token, wait_until
from tests.procs import spawn

CHECKOUT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "protocol", "certs", "agent", "server", "helpline")
BROKEN_CLI = 'def main() -> int:\n    raise SystemExit("this release is broken")\n'
HANGING_CLI = 'import time\n\n\ndef main() -> int:\n    time.sleep(3600)\n    return 0\n'


def build_artifact(directory: Path, version: str, *, cli: str | None = None) -> Path:
    """``helpline-agent-<version>.tar.gz`` of this checkout's packages, declaring ``version``."""
    path = directory / f"helpline-agent-{version}.tar.gz"
    replaced = {"common/version.py": f'__version__ = "{version}"\n'.encode()}
    if cli is not None:
        replaced["helpline/cli.py"] = cli.encode()
    with tarfile.open(path, "w:gz", compresslevel=1) as out:
        for package in PACKAGES:
            for source in sorted((CHECKOUT / package).rglob("*")):
                relative = source.relative_to(CHECKOUT).as_posix()
                if "__pycache__" in relative or source.is_dir() or relative in replaced:
                    continue
                out.add(source, arcname=relative, recursive=False)
        for name, data in replaced.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            out.addfile(info, io.BytesIO(data))
    return path


def manifest_for(version: str, *artifacts: Path, **changes: Any) -> ReleaseManifest:
    now = time.time()
    fields: dict[str, Any] = dict(
        version=version, released_at=now - 60, not_after=now + 86400,
        artifacts=[Artifact(name=a.name, sha256=hashlib.sha256(a.read_bytes()).hexdigest(), size=a.stat().st_size)
                   for a in artifacts])
    fields.update(changes)
    return ReleaseManifest(**fields)


async def release(server: HelplineServer, document: SignedDocument, *artifacts: Path) -> None:
    """Store the manifest document and upload its artifacts (as ``helpline admin release upload`` does)."""
    await documents.create_document(server.db, document, actor="user:test")
    body = documents.decode_or_none(document)
    assert isinstance(body, ReleaseManifest)
    for path in artifacts:
        async def chunks(path: Path = path) -> Any:
            yield path.read_bytes()

        await service.receive(server.db, server.config.data_dir, body.version, path.name, chunks(), actor="user:test")


async def roll_out(server: HelplineServer, version: str, **plan: Any) -> str:
    row = await service.create_rollout(server.db, service.RolloutPlan(version=version, **plan), actor="user:test")
    return str(row["id"])


async def targets(server: HelplineServer, rollout_id: str) -> dict[str, dict[str, Any]]:
    return {r["device_id"]: dict(r) for r in await repository.targets(server.db, rollout_id)}


async def wait_state(server: HelplineServer, rollout_id: str, device_id: str, *states: str,
                     timeout: float = 120) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def reached() -> bool:
        found.update((await targets(server, rollout_id)).get(device_id, {}))
        return found.get("state") in states

    await wait_until(reached, timeout=timeout, interval=0.2,
                     what=f"{device_id} in rollout {rollout_id} reaching {states} (now {found.get('state')})")
    return found


async def wait_online(server: HelplineServer, device_id: str, version: str, *, timeout: float = 120) -> None:
    async def online() -> bool:
        row = await devices.get(server.db, device_id)
        return row is not None and bool(row["online"]) and row["agent_version"] == version

    await wait_until(online, timeout=timeout, interval=0.2, what=f"{device_id} online on {version}")


async def enroll_pinned(server: HelplineServer, state_dir: Path, org: Org, group: str) -> AgentState:
    token = await new_token(server, group)
    state = AgentState(state_dir)
    fingerprint = CertificateAuthority.load(server.config.pki_path).fingerprint_sha256
    await asyncio.to_thread(enroll, console_url(server), token, fingerprint, state, root_sha256=org.root.fingerprint)
    return state


@contextlib.contextmanager
def launched(root: Path, state: AgentState, log: Path, *, commit_timeout_s: float = 90) -> Iterator[Any]:
    """``helpline agent launch --root ROOT -- agent run`` as the service runs it; stopped by PID at the end."""
    config = state.directory / "agent.toml"
    config.write_text(f'[agent]\nstate_dir = "{state.directory}"\nbackoff_cap_s = 1.0\n')
    root.mkdir(parents=True, exist_ok=True)
    with spawn("agent", "launch", "--root", str(root), "--commit-timeout", str(commit_timeout_s), "--",
               "agent", "run", "--config", str(config), log=log) as process:
        yield process


def device_audit(state: AgentState) -> list[dict[str, Any]]:
    path = state.directory / "device-audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def events(state: AgentState, prefix: str) -> list[str]:
    return [e["event"] for e in device_audit(state) if e["event"].startswith(prefix)]
