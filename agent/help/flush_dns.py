"""The ``flush_dns`` self-service action: empty the resolver's cache (what "the web site moved" needs).

Not a maintenance task (the catalog's actions are for approvers' task documents); a signed
self-service fix may name it. The first cache the device runs is flushed: systemd-resolved
(``resolvectl flush-caches``, or the older ``systemd-resolve --flush-caches``), else nscd.
"""

from __future__ import annotations

import msgspec

from ..tasks.context import ActionContext, Outcome, text


class FlushDnsParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """No parameters: there is one cache to flush."""


def flush_dns_argv(which: ActionContext) -> list[str] | None:
    if which.which("resolvectl"):
        return ["resolvectl", "flush-caches"]
    if which.which("systemd-resolve"):
        return ["systemd-resolve", "--flush-caches"]
    if which.which("nscd"):
        return ["nscd", "--invalidate=hosts"]
    return None


async def flush_dns(_params: FlushDnsParams, ctx: ActionContext) -> Outcome:
    argv = flush_dns_argv(ctx)
    if argv is None:
        return Outcome("failed", reason="no DNS cache runs on this device (systemd-resolved, nscd)")
    result = await ctx.runner.run(argv, timeout_s=min(ctx.timeout_s, 60), output_cap=ctx.output_cap)
    status = "succeeded" if result.exit_code == 0 and not result.timed_out else "failed"
    reason = "DNS cache flushed" if status == "succeeded" else f"{argv[0]} failed (exit status {result.exit_code})"
    return Outcome(status, result.exit_code, text(result.stdout), text(result.stderr), result.truncated, reason)
