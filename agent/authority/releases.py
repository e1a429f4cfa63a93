"""Release manifests, checked on the device: only a newer version, only as approvers signed it.

Future self-update calls :meth:`agent.authority.AuthorityStore.check_release` with the manifest
the server relayed and the version it runs; the store verifies the chain (pinned root, approver
certificates, four-eyes where the policy asks, revocations, ``not_after``) and then the rules
here: the manifest was not released in the future, and its version is strictly newer than the
running one (no downgrade to an older, perhaps vulnerable, release — also not one that approvers
once signed). What comes back is the list of artifact digests the updater must check each file
against before installing anything.

Versions compare as SemVer 2.0: ``MAJOR.MINOR.PATCH`` numerically, a ``-pre.release`` sorts
before its release, ``+build`` is ignored. A version that does not parse is refused (a release
the device cannot order is not one it installs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from certs.authority import when
from protocol.authority import Artifact, ReleaseManifest, Verdict

_SEMVER = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
                     r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$")

#: A sort key: the numeric core, then 1 for a release (after any pre-release) or 0 and the identifiers.
VersionKey = tuple[tuple[int, int, int], int, tuple[tuple[int, int, str], ...]]


def version_key(version: str) -> VersionKey | None:
    """The SemVer ordering key of ``version``; None when it is not SemVer."""
    match = _SEMVER.match(version)
    if match is None:
        return None
    core = (int(match[1]), int(match[2]), int(match[3]))
    if match[4] is None:
        return core, 1, ()
    # Numeric identifiers sort before alphanumeric ones and numerically among themselves.
    ids = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in match[4].split("."))
    return core, 0, ids


@dataclass(frozen=True)
class ReleaseCheck:
    """A release manifest checked for this device: the verdict, and when allowed what to install."""

    verdict: Verdict
    manifest: ReleaseManifest | None = None
    #: Artifact name → SHA-256 hex: every file must match before it is installed.
    digests: dict[str, str] = field(default_factory=dict)
    artifacts: tuple[Artifact, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.verdict.allowed


def release_problem(manifest: ReleaseManifest, *, current_version: str, now: float, clock_skew_s: float) -> str | None:
    """Why ``manifest`` (whose chain verified) is not an update this device takes now (None when it is)."""
    name = f"release {manifest.version}"
    if manifest.released_at > now + clock_skew_s:
        return f"{name} is released in the future ({when(manifest.released_at)})"
    offered, running = version_key(manifest.version), version_key(current_version)
    if offered is None:
        return f"{name}: the version is not MAJOR.MINOR.PATCH[-pre][+build], so it cannot be ordered"
    if running is None:
        return f"the running version {current_version!r} cannot be ordered; no release is taken"
    if offered <= running:
        return f"{name} is not newer than the running version {current_version} (no downgrades)"
    names = [a.name for a in manifest.artifacts]
    if len(set(names)) != len(names):
        return f"{name} lists an artifact name twice"
    return None
