"""Run a script whose SHA-256 and parameters approvers signed (checked before we get here)."""

from __future__ import annotations

import os
import shutil
from typing import Annotated, Literal

import msgspec

from common.files import confined
from protocol.messages import ShortStr

from .context import ActionContext, Outcome, text

INTERPRETERS: dict[str, list[str]] = {
    "sh": ["/bin/sh"],
    "bash": ["/bin/bash"],
    "python3": ["python3"],
    "powershell": ["pwsh", "-NoProfile", "-NonInteractive", "-File"],
}


class ScriptParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    interpreter: Literal["sh", "bash", "python3", "powershell"] = "sh"
    args: Annotated[list[ShortStr], msgspec.Meta(max_length=32)] = []


async def run_script(params: ScriptParams, ctx: ActionContext, script: str) -> Outcome:
    # The run id is the server's choice: confined() refuses '..' and friends before any mkdir or rmtree.
    work = confined(ctx.state_dir, "task-work", ctx.run_id)
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = work / "script"
    path.write_text(script)
    os.chmod(path, 0o700)
    argv = [*INTERPRETERS[params.interpreter], str(path), *params.args]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "LANG": "C.UTF-8",
           "HELPLINE_RUN_ID": ctx.run_id}
    try:
        result = await ctx.runner.run(argv, timeout_s=ctx.timeout_s, output_cap=ctx.output_cap, env=env,
                                      cwd=work, on_start=ctx.started_pids.append)
    except FileNotFoundError:
        return Outcome("failed", reason=f"interpreter {argv[0]!r} is not installed")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stdout, stderr = text(result.stdout), text(result.stderr)
    if result.timed_out:
        return Outcome("timed_out", result.exit_code, stdout, stderr, result.truncated,
                       f"killed with its process tree after {ctx.timeout_s:g} s")
    ok = result.exit_code == 0
    return Outcome("succeeded" if ok else "failed", result.exit_code, stdout, stderr, result.truncated,
                   "" if ok else f"script exited with status {result.exit_code}")
