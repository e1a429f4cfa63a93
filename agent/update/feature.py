"""Answer ``update.offer``: check, fetch, verify, install beside the running version, restart into it.

Order of checks (each refusal is reported as ``update.status refused`` with its reason and written
to the device audit): the manifest, by :meth:`AuthorityStore.check_release` from the pinned root (a
manifest the approvers did not sign, one from keys the root never certified, an expired one or one
not newer than the running version); the artifact named in the offer is one the manifest lists and
in a format this agent installs; the agent runs under the launcher (``HELPLINE_LAUNCHER_ROOT``: the
only way it can restart and be rolled back); no other version is on trial. Then the bytes are
fetched from the agent's own server over mTLS and must match the signed size and SHA-256 before they
are unpacked; the unpacked tree must declare the signed version. Only then is the trial marker
written, ``current`` flipped and the agent restarted (exit status
:data:`~agent.update.launcher.EXIT_RESTART`).

After the restart, the first ``welcome`` commits the trial (the launcher stops watching) and the
outcome — ``committed``, or ``rolled_back`` written by the launcher — is reported on every connection
until the next update replaces it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.version import __version__
from protocol.authority import Artifact
from protocol.update import UpdateOffer, UpdateStatus

from . import download, install
from .launcher import BASE, ROOT_ENV, Layout, read_json, write_json

if TYPE_CHECKING:
    from agent.authority.store import AuthorityStore
    from agent.clock import Clock
    from agent.control_client import AgentClient

log = logging.getLogger(__name__)

NOT_LAUNCHED = (f"this agent was not started by the update launcher ({ROOT_ENV} is not set), so it could neither "
                "restart into a new version nor be rolled back; install the release's package instead")


def layout_from_env() -> Layout | None:
    root = os.environ.get(ROOT_ENV)
    return Layout(Path(root)) if root else None


@dataclass
class Updater:
    """The device's side of self-update. ``layout`` None: not run by the launcher (offers are refused)."""

    client: AgentClient
    authority: AuthorityStore
    clock: Clock
    layout: Layout | None = field(default_factory=layout_from_env)
    running: str = __version__
    #: Called once an update is installed: stops the agent (run_agent then exits with EXIT_RESTART).
    on_restart: Callable[[], None] | None = None
    restart_requested: bool = False
    _busy: str | None = None

    # --- after a (re)connect -----------------------------------------------------------------

    async def on_ready(self, client: AgentClient) -> None:
        """Commit a trial of this version (we are connected: that is the test), then report the last outcome."""
        if self.layout is None:
            return
        # Files in a worker thread; the device audit (a hash chain) only from the event loop's thread.
        committed, outcome = await asyncio.to_thread(self._settle, self.layout)
        if committed is not None:
            self.authority.audit.record("update.committed", version=self.running,
                                        previous=str(committed.get("previous")), rollout_id=committed.get("rollout_id"))
            log.info("update committed", extra={"version": self.running})
        if outcome is not None and outcome["state"] == "rolled_back" and not outcome.get("audited"):
            self.authority.audit.record("update.rolled_back", version=str(outcome.get("version")),
                                        running=self.running, reason=str(outcome.get("reason")),
                                        rollout_id=outcome.get("rollout_id"))
            await asyncio.to_thread(write_json, self.layout.outcome, {**outcome, "audited": True})
            log.warning("the last update was rolled back", extra={"version": outcome.get("version"),
                                                                   "reason": outcome.get("reason")})
        if outcome is not None:
            await self._report(client, outcome.get("rollout_id"), str(outcome.get("version")), outcome["state"],
                               str(outcome.get("reason") or ""))

    def _settle(self, layout: Layout) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Commit our own trial (the trial committed, or None); the last outcome to report (or None)."""
        trial = read_json(layout.trial)
        committed = None
        if trial and trial.get("version") == self.running:
            write_json(layout.outcome, {"state": "committed", "version": self.running,
                                        "from_version": trial.get("previous"), "rollout_id": trial.get("rollout_id"),
                                        "reason": ""})
            layout.trial.unlink(missing_ok=True)
            committed = trial
        outcome = read_json(layout.outcome)
        if not outcome or outcome.get("state") not in ("committed", "rolled_back"):
            return committed, None
        return committed, outcome

    async def _report(self, client: AgentClient, rollout_id: Any, version: str, state: str, reason: str = "") -> None:
        status = UpdateStatus(rollout_id=rollout_id if isinstance(rollout_id, str) and _ID.match(rollout_id) else None,
                              version=_version_text(version), state=state,  # type: ignore[arg-type]
                              running=_version_text(self.running), reason=reason[:256])
        try:
            await client.send(status)
        except ConnectionError:
            log.info("update status not sent (disconnected)", extra={"state": state, "version": version})

    # --- an offer ---------------------------------------------------------------------------

    async def on_offer(self, client: AgentClient, offer: UpdateOffer) -> None:
        if self._busy is not None:
            log.info("update offer ignored: another is being handled", extra={"rollout_id": offer.rollout_id})
            return
        self._busy = offer.rollout_id
        client.spawn(self._handle(client, offer))

    async def _handle(self, client: AgentClient, offer: UpdateOffer) -> None:
        try:
            await self._install(client, offer)
        finally:
            self._busy = None

    async def _refuse(self, client: AgentClient, offer: UpdateOffer, version: str, reason: str, *,
                      audit: bool = True, state: str = "refused") -> None:
        if audit:
            self.authority.audit.record(f"update.{state}", version=version, running=self.running,
                                        rollout_id=offer.rollout_id, reason=reason)
        log.warning(f"update {state}", extra={"version": version, "reason": reason})
        await self._report(client, offer.rollout_id, version, state, reason)

    async def _install(self, client: AgentClient, offer: UpdateOffer) -> None:
        # Decide against this connection's authority (a fresh device may not hold the root yet).
        await self.authority.first_update.wait(client.connections)
        check = self.authority.check_release(offer.manifest, self.running, self.clock.wall())
        if not check.allowed or check.manifest is None:  # check_release audited it
            await self._refuse(client, offer, _claimed_version(offer), check.verdict.reason, audit=False)
            return
        version = check.manifest.version
        artifact = next((a for a in check.artifacts if a.name == offer.artifact), None)
        if artifact is None:
            await self._refuse(client, offer, version, f"the offer names artifact {offer.artifact}, which the signed "
                                                       "manifest does not list")
            return
        if not install.supported(artifact.name):
            await self._refuse(client, offer, version, f"{artifact.name}: not a format this agent installs "
                                                       f"({', '.join(install.FORMATS)})")
            return
        layout = self.layout
        if layout is None:
            await self._refuse(client, offer, version, NOT_LAUNCHED)
            return
        trial = read_json(layout.trial)
        if trial:
            await self._refuse(client, offer, version, f"version {trial.get('version')} is on trial; one update at "
                                                       "a time", audit=False)
            return
        await self._report(client, offer.rollout_id, version, "downloading")
        try:
            source = download.Source.from_agent_url(client.state.agent_url, client.config.proxy)
            previous = await asyncio.to_thread(self._fetch_and_place, layout, source, client.ssl_context(),
                                               artifact, version, offer.rollout_id)
        except (download.DigestMismatch, install.InstallRefused) as exc:
            await self._refuse(client, offer, version, f"artifact {artifact.name}: {exc}")
            return
        except (OSError, HTTPException, ValueError) as exc:
            await self._refuse(client, offer, version, f"artifact {artifact.name}: {type(exc).__name__}: {exc}",
                               state="failed")
            return
        self.authority.audit.record("update.installed", version=version, previous=previous, running=self.running,
                                    rollout_id=offer.rollout_id, sha256=artifact.sha256)
        log.info("update installed; restarting into it", extra={"version": version, "previous": previous})
        await self._report(client, offer.rollout_id, version, "installed")
        self.restart_requested = True
        if self.on_restart is not None:
            self.on_restart()

    def _fetch_and_place(self, layout: Layout, source: download.Source, context: ssl.SSLContext,
                         artifact: Artifact, version: str, rollout_id: str) -> str:
        """Download, verify, unpack; then the trial marker, ``current`` flipped. Returns the previous version."""
        layout.downloads.mkdir(mode=0o700, parents=True, exist_ok=True)
        layout.versions.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=layout.downloads, prefix=f"{artifact.sha256[:16]}.", suffix=".part")
        os.close(fd)
        part = Path(name)
        try:
            download.fetch(source, context, sha256=artifact.sha256, size=artifact.size, dest=part)
            install.unpack(part, artifact.name, version, layout.version_dir(version))
        finally:
            part.unlink(missing_ok=True)
        previous = layout.current_version() or BASE
        # The marker first: a power cut before the flip leaves a trial the launcher resolves to the old version.
        write_json(layout.trial, {"version": version, "previous": previous, "rollout_id": rollout_id,
                                  "starts": 0, "installed_at": self.clock.wall()})
        layout.point_current(version)
        install.prune(layout.versions, {version, previous})
        return previous


_ID = re.compile(r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,63}$")
_VERSION = re.compile(r"^[0-9A-Za-z.+-]{1,64}$")


def _version_text(text: str) -> str:
    """``text`` when it can go in ``update.status`` (a marker file could hold anything), else "unknown"."""
    return text if _VERSION.match(text) else "unknown"


def _claimed_version(offer: UpdateOffer) -> str:
    """The version a refused manifest claims (for the report only; nothing is trusted from it)."""
    import msgspec

    from protocol.authority import ReleaseManifest

    try:
        return msgspec.json.decode(offer.manifest.body, type=ReleaseManifest).version
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
        return "unknown"


def attach(updater: Updater) -> None:
    updater.client.register(UpdateOffer, updater.on_offer)
    updater.client.on_ready.append(updater.on_ready)
