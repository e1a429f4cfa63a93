"""The agent's own checks before any task runs: catalog, params, script signature, grant, window.

Outcome is one of: run now, wait (the grant would allow it, but its window has not opened
yet), or refuse with a reason. Nothing the server says is taken on trust: the grant is the
one verified with the pinned org grant key, the script signature covers script and params.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from agent.grants import GrantBook
from certs.errors import GrantSignatureError
from common.files import UnsafePath, safe_name
from protocol.grants import Grant, evaluate
from protocol.tasks import MAX_SCRIPT_BYTES, TaskRun, script_signing_bytes

from .catalog import CATALOG, BadParams, parse_params

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

Kind = Literal["run", "wait", "refuse"]


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str
    params: Any = None
    grant: Grant | None = None


def _refuse(reason: str) -> Verdict:
    return Verdict("refuse", reason)


def check_request(message: TaskRun, public_key: Ed25519PublicKey | None) -> Verdict | Any:
    """Static checks (no clock): return the parsed params, or a refusal Verdict."""
    try:
        safe_name(message.run_id)  # it names the run's files on this device (the wire type checks it too)
    except UnsafePath as exc:
        return _refuse(f"run id refused: {exc}")
    spec = CATALOG.get(message.action)
    if spec is None:
        return _refuse(f"unknown action {message.action!r}; known: {', '.join(sorted(CATALOG))}")
    try:
        params = parse_params(spec, message.params)
    except BadParams as exc:
        return _refuse(str(exc))
    if message.action != "script":
        if message.script is not None:
            return _refuse(f"action {message.action!r} does not take a script")
        return params
    if message.script is None:
        return _refuse("script action without a script")
    size = len(message.script.encode())
    if size > MAX_SCRIPT_BYTES:
        return _refuse(f"script of {size} bytes exceeds the limit of {MAX_SCRIPT_BYTES}")
    if not message.script_signature:
        return _refuse("script is not signed; sign it with 'helpline admin script sign'")
    if public_key is None:
        return _refuse("this agent has no pinned grant key; cannot verify the script")
    from certs.grants import verify_bytes  # first use only: keeps cryptography out of an idle agent

    try:
        verify_bytes(public_key, script_signing_bytes(message.script, message.params), message.script_signature)
    except GrantSignatureError:
        return _refuse("script signature does not verify: script or parameters were modified, "
                       "or it was not signed with the org grant key")
    return params


def find_grant(message: TaskRun, book: GrantBook) -> Grant | str:
    """The grant named by the task: the attached one (verified here) or one from the agent's book."""
    if message.grant is not None:
        if book.public_key is None:
            return "this agent has no pinned grant key; cannot verify the grant"
        from certs.grants import verify_grant

        try:
            grant = verify_grant(book.public_key, message.grant)
        except GrantSignatureError as exc:
            return f"grant refused: {exc}"
        if grant.grant_id != message.grant_id:
            return "attached grant does not match the task's grant id"
        return grant
    grant_or_none = book.get(message.grant_id)
    if grant_or_none is None:
        if message.grant_id in book.revoked:
            return "grant has been revoked"
        return f"no valid grant {message.grant_id!r} on this device"
    return grant_or_none


def decide(message: TaskRun, *, book: GrantBook, group: str, now: float, local: datetime) -> Verdict:
    """Full check at time ``now``/``local``: run, wait for the window, or refuse."""
    params = check_request(message, book.public_key)
    if isinstance(params, Verdict):
        return params
    grant = find_grant(message, book)
    if isinstance(grant, str):
        return _refuse(grant)
    revoked = grant.grant_id in book.revoked

    def judge(g: Grant, at: float) -> tuple[bool, str]:
        d = evaluate(g, device_id=book.device_id, group=group, technician=message.technician, role=message.role,
                     action="tasks", now=at, local=local, revoked=revoked)
        return d.allowed, d.reason

    allowed, reason = judge(grant, now)
    if allowed:
        return Verdict("run", reason, params, grant)
    # Would it be allowed once the window opens (or the grant starts)? Then wait; else refuse.
    later_ok, _ = judge(msgspec.structs.replace(grant, windows=[]), max(now, grant.not_before))
    if later_ok:
        return Verdict("wait", reason, params, grant)
    return Verdict("refuse", reason, params, grant)
