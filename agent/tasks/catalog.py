"""The built-in actions and their typed parameters. Anything not listed here is refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from .cleanup import ClearTempParams, clear_temp
from .context import ActionContext, Outcome
from .diagnostics import DiagnosticsParams, diagnostics
from .script import ScriptParams, run_script
from .system import RebootParams, RestartServiceParams, reboot, restart_service
from .updates import UpdatesParams, updates

ActionFn = Callable[[Any, ActionContext, str], Awaitable[Outcome]]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    params: type[msgspec.Struct]
    run: ActionFn
    summary: str


def _plain(fn: Callable[[Any, ActionContext], Awaitable[Outcome]]) -> ActionFn:
    async def call(params: Any, ctx: ActionContext, _script: str) -> Outcome:
        return await fn(params, ctx)
    return call


CATALOG: dict[str, ActionSpec] = {spec.name: spec for spec in [
    ActionSpec("diagnostics", DiagnosticsParams, _plain(diagnostics), "logs, inventory and health → tar.gz"),
    ActionSpec("restart_service", RestartServiceParams, _plain(restart_service), "systemctl restart NAME"),
    ActionSpec("clear_temp", ClearTempParams, _plain(clear_temp), "remove old files from temp/cache dirs"),
    ActionSpec("updates", UpdatesParams, _plain(updates), "check for or apply OS updates"),
    ActionSpec("reboot", RebootParams, _plain(reboot), "reboot with a notice to logged-in users"),
    ActionSpec("script", ScriptParams, run_script, "run a script whose SHA-256 the approvers signed"),
]}


class BadParams(ValueError):
    """The parameters do not fit the action's schema."""


def parse_params(spec: ActionSpec, params: dict[str, Any]) -> Any:
    try:
        return msgspec.convert(params, spec.params, strict=True)
    except msgspec.ValidationError as exc:
        raise BadParams(f"bad parameters for {spec.name}: {exc}") from exc
