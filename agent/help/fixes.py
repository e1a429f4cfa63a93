"""Tier 0 self-service: the signed fixes this device holds, and running one in the agent.

A fix is offered only while its :class:`~protocol.authority.SelfServiceFix` document verifies
from the device's pinned root (:meth:`AuthorityStore.verify`: approvers, revocations, this device
or its group) and names an action the agent can run for it. Running it: the user's parameters are
checked against the action's own schema first (so a bad value costs no run), then
:meth:`AuthorityStore.check_fix` verifies the document afresh, checks the parameters against the
signed limits and takes one run of the budget (audited ``fix.allowed``/``fix.refused``); only then
does the action run — in the agent's process (the root service on an installed device), through
the task catalog's actions and its command layer (timeouts, capped output, whole process tree
killed). The outcome goes to the device audit (``fix.ran``).

A ``script`` fix runs the script whose SHA-256 the document names, read from
``<state>/fix-scripts/<sha256>``: :meth:`SelfService.fetch_missing` fetches it from the server over
mTLS (agent/help/script_fetch.py: size-limited, hashed before it is kept, 0600) when the document
arrives and again before the window lists or runs fixes; the bytes are hashed again before every run,
and must be UTF-8. Until they are here the fix is not offered.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.update.download import DigestMismatch
from protocol.authority import SelfServiceFix

from ..tasks.catalog import CATALOG, ActionSpec, BadParams, parse_params
from ..tasks.context import ActionContext, Outcome
from .flush_dns import FlushDnsParams, flush_dns
from .wire import FixView, ParamView

if TYPE_CHECKING:
    from agent.authority import AuthorityStore
    from agent.tasks.service import TaskService

log = logging.getLogger(__name__)

#: ``fetcher(sha256, directory)``: puts the checked script at ``directory / sha256`` or raises.
ScriptFetcher = Callable[[str, Path], Any]


async def _flush(params: Any, ctx: ActionContext, _script: str) -> Outcome:
    return await flush_dns(params, ctx)


#: The actions a self-service fix may name (the catalog's, less diagnostics and reboot, plus flush_dns).
ACTIONS: dict[str, ActionSpec] = {
    **{name: CATALOG[name] for name in ("clear_temp", "restart_service", "updates", "script")},
    "flush_dns": ActionSpec("flush_dns", FlushDnsParams, _flush, "flush the DNS cache"),
}
#: How long one fix may run (updates take long; the others seconds).
TIMEOUT_S = {"updates": 1800.0}
DEFAULT_TIMEOUT_S = 300.0
OUTPUT_CAP = 64 * 1024
MAX_DETAIL = 4000


@dataclass(frozen=True)
class FixResult:
    fix_id: str
    title: str
    ok: bool
    detail: str
    #: False: refused before anything ran (no run of the budget was taken unless the store says so).
    ran: bool


def _budget(fix: SelfServiceFix) -> str:
    seconds = fix.budget.per_seconds
    if seconds >= 3600:
        unit = f"{seconds / 3600:g} h"
    else:
        unit = f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
    runs = "run" if fix.budget.max_runs == 1 else "runs"
    return f"{fix.budget.max_runs} {runs} per {unit}"


def view(fix: SelfServiceFix) -> FixView:
    params = [ParamView(name=name, type=limit.type, minimum=limit.minimum, maximum=limit.maximum,
                        choices=list(limit.choices) if limit.choices is not None else None,
                        max_length=limit.max_length, required=limit.required)
              for name, limit in sorted(fix.params.items())]
    return FixView(fix_id=fix.fix_id, title=fix.title[:256], action=fix.action, params=params, budget=_budget(fix))


class SelfService:
    """Lists and runs the device's self-service fixes; the task service lends its command layer."""

    def __init__(self, authority: AuthorityStore | None, tasks: TaskService, state_dir: Path,
                 clock: Callable[[], float], fetcher: ScriptFetcher | None = None) -> None:
        self.authority, self.tasks, self.state_dir, self.clock = authority, tasks, state_dir, clock
        self.scripts_dir = state_dir / "fix-scripts"
        #: Fetches a script by SHA-256 into a directory (blocking; None: nothing is fetched).
        self.fetcher = fetcher
        self._fetching = asyncio.Lock()

    def verified(self) -> list[SelfServiceFix]:
        """The fixes whose documents verify now and whose action this agent can run (scripts present or not)."""
        if self.authority is None:
            return []
        now = self.clock()
        found = []
        for document in self.authority.documents():
            if document.kind != "fix":
                continue
            verdict = self.authority.verify(document, now)
            fix = verdict.body
            if verdict.allowed and isinstance(fix, SelfServiceFix) and fix.action in ACTIONS:
                found.append(fix)
        return sorted(found, key=lambda f: f.title)

    def offered(self) -> list[SelfServiceFix]:
        """The verified fixes this agent can run now (a script fix only with its signed bytes on the device)."""
        return [f for f in self.verified() if f.action != "script" or self._script(f) is not None]

    async def fetch_missing(self) -> int:
        """Fetch the scripts of verified fixes that are not on the device (or differ); returns how many came.

        A failure is logged and leaves the fix unoffered; it is tried again on the next call.
        """
        if self.fetcher is None:
            return 0
        fetched = 0
        async with self._fetching:
            for fix in self.verified():
                if fix.action != "script" or fix.script_sha256 is None or self._script(fix) is not None:
                    continue
                try:
                    await asyncio.to_thread(self.fetcher, fix.script_sha256, self.scripts_dir)
                    fetched += 1
                    log.info("fix script fetched", extra={"fix_id": fix.fix_id, "sha256": fix.script_sha256})
                except (OSError, HTTPException, ValueError, DigestMismatch) as exc:
                    log.warning("fix script not fetched: %s", exc, extra={"fix_id": fix.fix_id,
                                                                          "sha256": fix.script_sha256})
        return fetched

    def _script(self, fix: SelfServiceFix) -> str | None:
        if fix.script_sha256 is None:
            return None
        try:
            data = (self.scripts_dir / fix.script_sha256).read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != fix.script_sha256:
            log.warning("fix script does not match its signed SHA-256", extra={"fix_id": fix.fix_id})
            return None
        try:
            return data.decode("utf-8")  # runs exactly the signed bytes: no replacement characters
        except UnicodeDecodeError:
            log.warning("fix script is not UTF-8", extra={"fix_id": fix.fix_id})
            return None

    async def run(self, fix_id: str, params: dict[str, Any], *, user: str) -> FixResult:
        """Check, take a run of the budget, run; never raises for a refusal or a failure."""
        await self.fetch_missing()
        fix = next((f for f in self.offered() if f.fix_id == fix_id), None)
        if fix is None or self.authority is None:
            return FixResult(fix_id, fix_id, False, f"no self-service fix {fix_id} is offered on this device", False)
        spec = ACTIONS[fix.action]
        try:
            action_params = parse_params(spec, params)
        except BadParams as exc:
            return FixResult(fix.fix_id, fix.title, False, str(exc)[:MAX_DETAIL], False)
        script = ""
        if fix.action == "script":
            script = self._script(fix) or ""
            if not script:
                return FixResult(fix.fix_id, fix.title, False, "the fix's script is not on this device", False)
        verdict = self.authority.check_fix(fix_id, params, self.clock())
        if not verdict.allowed:
            return FixResult(fix.fix_id, fix.title, False, verdict.reason[:MAX_DETAIL], False)
        outcome = await self._execute(spec, action_params, script, fix)
        ok = outcome.status == "succeeded"
        detail = _detail(outcome)
        self.authority.audit.record("fix.ran", document_id=fix.fix_id, user=user, ok=ok, status=outcome.status,
                                    reason=outcome.reason[:500])
        log.info("self-service fix ran", extra={"fix_id": fix.fix_id, "user": user, "ok": ok})
        return FixResult(fix.fix_id, fix.title, ok, detail, True)

    async def _execute(self, spec: ActionSpec, params: Any, script: str, fix: SelfServiceFix) -> Outcome:
        timeout = TIMEOUT_S.get(fix.action, DEFAULT_TIMEOUT_S)
        tasks = self.tasks
        ctx = ActionContext(run_id=f"fix-{secrets.token_hex(6)}", runner=tasks.runner, state_dir=self.state_dir,
                            timeout_s=timeout, output_cap=OUTPUT_CAP, temp_targets=tasks.temp_targets,
                            logged_in_users=tasks.logged_in_users, which=tasks.which, clock=tasks.clock)
        try:
            return await asyncio.wait_for(spec.run(params, ctx, script), timeout + 5)
        except TimeoutError:
            return Outcome("timed_out", reason=f"stopped after {timeout:g} s")
        except FileNotFoundError as exc:
            return Outcome("failed", reason=f"program not found: {exc.filename or exc}")
        except Exception as exc:
            log.exception("self-service fix failed inside the agent", extra={"fix_id": fix.fix_id})
            return Outcome("failed", reason=f"agent error: {type(exc).__name__}")


def _detail(outcome: Outcome) -> str:
    """What the user (and the technician, on escalation) reads: the reason, then the output's tail."""
    parts = [outcome.reason or outcome.status]
    tail = (outcome.stderr.strip() or outcome.stdout.strip())[-1500:]
    if tail:
        parts.append(tail)
    return "\n".join(parts)[:MAX_DETAIL]
