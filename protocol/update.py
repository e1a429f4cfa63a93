"""Signed self-update: the messages (sans-I/O).

The server offers a release with ``update.offer``: the approver-signed release manifest (a
``release`` :class:`~protocol.authority.SignedDocument`, relayed as stored — the server cannot make
one) and which of its artifacts to fetch. The agent checks the manifest from its pinned root (no
downgrade, not expired), downloads the artifact over its own mTLS connection from the path
:func:`artifact_path` names (never another host: the offer carries only the artifact's SHA-256),
checks size and SHA-256 against the manifest before installing anything, and reports each step with
``update.status``. After restarting into the new version it reports ``committed`` once it is
connected again, or — from the previous version, after the launcher rolled back — ``rolled_back``
with the reason. The last outcome is reported on every connection until the next update replaces it
(the server records it idempotently).

States: ``refused`` (the device will not install this: manifest, digest, artifact format),
``failed`` (it could not: download, disk), ``downloading``, ``installed`` (the new version is in
place and the agent restarts into it), ``committed``, ``rolled_back``.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

import msgspec

from .authority import SignedDocument
from .messages import Id, Message, ShortStr

UpdateState = Literal["refused", "failed", "downloading", "installed", "committed", "rolled_back"]
#: States after which the server offers nothing more to the device in that rollout.
FINAL_STATES: frozenset[str] = frozenset({"refused", "failed", "committed", "rolled_back"})

ArtifactName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._+-]{1,200}$")]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
VersionText = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z.+-]{1,64}$")]

#: Where an agent fetches an artifact on the agent listener (mTLS): content-addressed.
ARTIFACT_PREFIX = "/agent/updates/"
_ARTIFACT_PATH = re.compile(r"^/agent/updates/[0-9a-f]{64}$")


def artifact_path(sha256: str) -> str:
    """The agent-listener path of the artifact with this SHA-256."""
    return f"{ARTIFACT_PREFIX}{sha256}"


def is_artifact_path(path: str) -> bool:
    return _ARTIFACT_PATH.match(path) is not None


class UpdateOffer(Message, frozen=True, tag="update.offer"):
    """Server → agent: install ``artifact`` of the release ``manifest`` (the agent re-checks everything)."""

    sender: ClassVar[str] = "server"
    rollout_id: Id
    manifest: SignedDocument
    #: One of the manifest's artifact names; the agent fetches ``artifact_path(its signed sha256)``.
    artifact: ArtifactName


class UpdateStatus(Message, frozen=True, tag="update.status"):
    """Agent → server: where an update stands on this device, and why when it did not go through."""

    sender: ClassVar[str] = "agent"
    #: The release the report is about.
    version: VersionText
    state: UpdateState
    #: The version the device runs while it reports.
    running: VersionText
    rollout_id: Id | None = None
    reason: ShortStr = ""
