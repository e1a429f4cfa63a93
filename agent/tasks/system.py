"""Service restart and reboot: small argv builders plus the calls through the command layer."""

from __future__ import annotations

from typing import Annotated

import msgspec

from .commands import CommandResult
from .context import ActionContext, Outcome, text

#: A reboot is postponed at most this long for logged-in users.
MAX_REBOOT_DELAY_MIN = 60

ServiceName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9@._:-]{0,127}$")]


class RestartServiceParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: ServiceName


class RebootParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: Shown to logged-in users (wall) and in the shutdown message.
    message: Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[^\x00-\x1f]*$")] = \
        "IT maintenance: this computer will restart. Save your work."
    #: Grace period when someone is logged in (the bounded postpone).
    delay_min: Annotated[int, msgspec.Meta(ge=1, le=MAX_REBOOT_DELAY_MIN)] = 5


def restart_service_argv(params: RestartServiceParams) -> list[str]:
    return ["systemctl", "restart", "--", params.name]


def reboot_argvs(params: RebootParams, users: list[str]) -> list[list[str]]:
    """Wall notice and a delayed reboot when someone is logged in; else reboot at once."""
    if users:
        return [["wall", params.message], ["shutdown", "-r", f"+{params.delay_min}", params.message]]
    return [["shutdown", "-r", "now", params.message]]


def _outcome(result: CommandResult, ok_reason: str) -> Outcome:
    if result.timed_out:
        return Outcome("timed_out", result.exit_code, text(result.stdout), text(result.stderr), result.truncated,
                       "command timed out")
    status = "succeeded" if result.exit_code == 0 else "failed"
    reason = ok_reason if status == "succeeded" else f"exit status {result.exit_code}"
    return Outcome(status, result.exit_code, text(result.stdout), text(result.stderr), result.truncated, reason)


async def restart_service(params: RestartServiceParams, ctx: ActionContext) -> Outcome:
    result = await ctx.runner.run(restart_service_argv(params), timeout_s=ctx.timeout_s, output_cap=ctx.output_cap)
    outcome = _outcome(result, f"service {params.name} restarted")
    outcome.details = {"service": params.name}
    return outcome


async def reboot(params: RebootParams, ctx: ActionContext) -> Outcome:
    users = sorted(set(ctx.logged_in_users()))
    argvs = reboot_argvs(params, users)
    result = CommandResult(exit_code=0)
    for argv in argvs:
        result = await ctx.runner.run(argv, timeout_s=min(ctx.timeout_s, 60), output_cap=ctx.output_cap)
        if argv[0] == "wall" and result.exit_code != 0:
            continue  # no terminal to write to is not a reason to skip maintenance
        if result.exit_code != 0 or result.timed_out:
            break
    delay = params.delay_min if users else 0
    outcome = _outcome(result, f"reboot scheduled in {delay} min" if delay else "rebooting now")
    outcome.details = {"logged_in_users": users, "delay_min": delay}
    return outcome
