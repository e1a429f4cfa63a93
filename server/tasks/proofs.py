"""Technician-started tasks on the server: carry the device's challenge to the technician and their proof back.

A task authorization that names technicians runs on a device only when one of them signs that
device's fresh nonce for the run (:mod:`agent.tasks.service`). The server holds no key that could
do it; it keeps the agent's ``task.challenge`` in the run's ``details`` (so the API shows it on
every node), relays the technician's ``task.proof`` unchanged, once, and says what the device
answered. The proof goes straight to the agent when its control channel is on this node, or
through an event (:data:`TASK_PROOF`) to the node that holds it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from protocol.authority import TechnicianProof
from protocol.authority_messages import TaskChallenge, TaskProof

from .. import audit, events
from ..errors import ApiError
from ..store import Database, Row
from . import repository
from .status import RESULTS, RunStatus, check

if TYPE_CHECKING:
    from ..agent_channel import AgentConnection
    from ..app import HelplineServer

log = logging.getLogger(__name__)

#: Event for the node that holds the device's control channel: relay this proof.
TASK_PROOF = "task.proof"
#: How long ``POST …/proof`` waits for the device's outcome before answering with the run as it is.
PROOF_ANSWER_WAIT_S = 10.0


def waiting_reason(document_id: str) -> str:
    return f"waiting for a technician named in task authorization {document_id} to sign the device's challenge"


async def on_challenge(db: Database, conn: AgentConnection, msg: TaskChallenge) -> None:
    """The agent asks for a technician's signature before a run starts: keep the challenge on the run."""
    now = time.time()
    check(RunStatus.SENT, RunStatus.WAITING)
    challenge = {"nonce": msg.nonce, "document_id": msg.document_id, "action": "tasks", "device_id": msg.device_id,
                 "expires_at": msg.expires_at}
    changed = await db.execute(
        "UPDATE task_runs SET status = ?, reason = ?, details = ?, updated_at = ? WHERE id = ? AND device_id = ?"
        " AND status IN (?, ?)",
        (RunStatus.WAITING.value, waiting_reason(msg.document_id), json.dumps({"challenge": challenge}), now,
         msg.run_id, conn.device_id, RunStatus.SENT.value, RunStatus.WAITING.value))
    if changed != 1:
        await conn.reply_error("unknown_run", "no delivered run of this device waits for a challenge", msg.id)
        return
    await audit.append(db, f"device:{conn.device_id}", "task.challenge", msg.run_id,
                       {"device_id": conn.device_id, "document_id": msg.document_id, "expires_at": msg.expires_at})


def challenge_of(run: Row) -> dict[str, Any] | None:
    """The open challenge of a run (None when there is none, or its proof was sent)."""
    if run["status"] != RunStatus.WAITING:
        return None
    try:
        details = json.loads(run["details"] or "{}")
    except ValueError:
        return None
    challenge = details.get("challenge") if isinstance(details, dict) else None
    return challenge if isinstance(challenge, dict) else None


async def relay_proof(server: HelplineServer, run: Row, task: Row, proof: TechnicianProof, user: str) -> Row:
    """Carry ``user``'s proof to the run's agent (once, before the challenge expires); the run as the device left
    it after up to :data:`PROOF_ANSWER_WAIT_S` s. Only the technician who started the task may answer."""
    db = server.db
    if task["technician"] != user:
        raise ApiError(403, "forbidden", "only the technician who started the task may answer its challenge")
    challenge = challenge_of(run)
    if challenge is None:
        raise ApiError(409, "no_challenge", "the device has not asked for a proof for this run (or one was sent)")
    if time.time() >= float(challenge["expires_at"]):
        raise ApiError(409, "challenge_expired", "the device's challenge has expired")
    sent = {"proof_sent": {"by": user, "credential_id": proof.approval.credential_id, "at": time.time()}}
    # Compare-and-set on the stored challenge: of two concurrent answers only one is relayed.
    if await db.execute("UPDATE task_runs SET details = ?, updated_at = ? WHERE id = ? AND status = ? AND details = ?",
                        (json.dumps(sent), time.time(), run["id"], RunStatus.WAITING.value, run["details"])) != 1:
        raise ApiError(409, "proof_sent", "a proof was already sent for this challenge")
    await audit.append(db, f"user:{user}", "task.proof_relayed", run["id"],
                       {"device_id": run["device_id"], "document_id": challenge["document_id"],
                        "credential_id": proof.approval.credential_id})
    message = TaskProof(run_id=run["id"], proof=proof)
    conn = server.connections.get(run["device_id"])
    if conn is not None:
        await conn.send(message)
    else:  # the device's control channel is on another node (or comes back later: then the challenge expires)
        async with db.transaction() as tx:
            await events.publish_in(tx, TASK_PROOF, run["id"], {"device_id": run["device_id"],
                                                                "message": msgspec.to_builtins(message)})
    return await _outcome(db, run["id"])


async def _outcome(db: Database, run_id: str) -> Row:
    deadline = time.monotonic() + PROOF_ANSWER_WAIT_S
    while True:
        row = await repository.get_run(db, run_id)
        assert row is not None  # runs are never deleted
        if row["status"] in RESULTS or time.monotonic() >= deadline:
            return row
        await asyncio.sleep(0.1)


def on_proof_event(server: HelplineServer) -> events.Handler:
    """Relay a proof posted on another node when this node holds the device's control channel."""

    async def handle(run_id: str, payload: dict[str, Any]) -> None:
        conn = server.connections.get(str(payload.get("device_id", "")))
        if conn is None:
            return
        try:
            message = msgspec.convert(payload.get("message"), TaskProof)
        except msgspec.ValidationError as exc:
            log.warning("unusable task.proof event ignored", extra={"run_id": run_id, "error": str(exc)})
            return
        await conn.send(message)

    return handle
