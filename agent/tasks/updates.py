"""OS updates behind one interface: apt and dnf on Linux, winget and softwareupdate slots.

Each package manager only builds argv lists and reads their output; running goes through
the command layer so tests can assert exactly what would run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import msgspec

from .commands import CommandResult
from .context import ActionContext, Outcome, text


class UpdatesParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    mode: Literal["check", "apply"] = "check"
    security_only: bool = False


@dataclass(frozen=True)
class Step:
    argv: list[str]
    env: dict[str, str] | None = None
    #: Exit codes that mean success (dnf check-update answers 100 when updates exist).
    ok_codes: frozenset[int] = frozenset({0})


class PackageManager:
    name = ""
    program = ""

    def check(self, security_only: bool) -> list[Step]:
        raise NotImplementedError

    def apply(self, security_only: bool) -> list[Step]:
        raise NotImplementedError

    def pending(self, output: str, security_only: bool) -> int | None:
        """Number of pending updates read from the last check step's output (None if unknown)."""
        return None


_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


class Apt(PackageManager):
    name, program = "apt", "apt-get"

    def check(self, security_only: bool) -> list[Step]:
        return [Step(["apt-get", "update", "-q"], _APT_ENV), Step(["apt-get", "-s", "-q", "upgrade"], _APT_ENV)]

    def apply(self, security_only: bool) -> list[Step]:
        if security_only:
            return [Step(["apt-get", "update", "-q"], _APT_ENV), Step(["unattended-upgrade", "-v"], _APT_ENV)]
        return [Step(["apt-get", "update", "-q"], _APT_ENV),
                Step(["apt-get", "-y", "-q", "-o", "Dpkg::Options::=--force-confdef",
                      "-o", "Dpkg::Options::=--force-confold", "upgrade"], _APT_ENV)]

    def pending(self, output: str, security_only: bool) -> int | None:
        lines = [ln for ln in output.splitlines() if ln.startswith("Inst ")]
        if security_only:
            lines = [ln for ln in lines if "-security" in ln]
        return len(lines)


class Dnf(PackageManager):
    name, program = "dnf", "dnf"

    def check(self, security_only: bool) -> list[Step]:
        return [Step(["dnf", "-q", "check-update", *(["--security"] if security_only else [])],
                     ok_codes=frozenset({0, 100}))]

    def apply(self, security_only: bool) -> list[Step]:
        return [Step(["dnf", "-y", "upgrade", *(["--security"] if security_only else [])])]

    def pending(self, output: str, security_only: bool) -> int | None:
        return sum(1 for ln in output.splitlines() if ln.strip() and not ln.startswith((" ", "Last metadata",
                                                                                         "Obsoleting")))


class Winget(PackageManager):
    name, program = "winget", "winget"

    def check(self, security_only: bool) -> list[Step]:
        return [Step(["winget", "upgrade", "--accept-source-agreements"])]

    def apply(self, security_only: bool) -> list[Step]:
        return [Step(["winget", "upgrade", "--all", "--silent", "--accept-source-agreements",
                      "--accept-package-agreements"])]


class SoftwareUpdate(PackageManager):
    name, program = "softwareupdate", "softwareupdate"

    def check(self, security_only: bool) -> list[Step]:
        return [Step(["softwareupdate", "--list"])]

    def apply(self, security_only: bool) -> list[Step]:
        return [Step(["softwareupdate", "--install", "--recommended" if security_only else "--all"])]


MANAGERS: list[PackageManager] = [Apt(), Dnf(), Winget(), SoftwareUpdate()]


def detect(which: Callable[[str], str | None]) -> PackageManager | None:
    for manager in MANAGERS:
        if which(manager.program):
            return manager
    return None


async def updates(params: UpdatesParams, ctx: ActionContext) -> Outcome:
    manager = detect(ctx.which)
    if manager is None:
        return Outcome("failed", reason="no supported package manager found (apt, dnf, winget, softwareupdate)")
    steps = manager.check(params.security_only) if params.mode == "check" else manager.apply(params.security_only)
    started = ctx.clock()
    out: list[str] = []
    err: list[str] = []
    result = CommandResult(exit_code=0)
    truncated = False
    for step in steps:
        result = await ctx.runner.run(step.argv, timeout_s=ctx.remaining(started), output_cap=ctx.output_cap,
                                      env=step.env)
        out.append(text(result.stdout))
        err.append(text(result.stderr))
        truncated = truncated or result.truncated
        if result.timed_out:
            return Outcome("timed_out", result.exit_code, "".join(out), "".join(err), truncated,
                           f"{step.argv[0]} timed out", {"manager": manager.name})
        if result.exit_code not in step.ok_codes:
            return Outcome("failed", result.exit_code, "".join(out), "".join(err), truncated,
                           f"{' '.join(step.argv[:3])} exited with {result.exit_code}", {"manager": manager.name})
    details: dict[str, object] = {"manager": manager.name, "mode": params.mode}
    if params.mode == "check":
        details["pending"] = manager.pending(text(result.stdout), params.security_only)
    return Outcome("succeeded", result.exit_code, "".join(out), "".join(err), truncated,
                   f"updates {'checked' if params.mode == 'check' else 'applied'} with {manager.name}", dict(details))
