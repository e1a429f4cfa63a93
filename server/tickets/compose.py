"""What a session's write-back says, read from the store: the note's text and the same as data.

Who (technician), when (start, end, duration), how it was authorized (the device user's
consent, the agent's policy, or an approver-signed grant document and its approvers), how it
ended, the technician's notes, the chat transcript, file transfers and commands from the audit
log (shell, processes ended, service actions, clipboard), and a link to the recording. Text
only, capped at :data:`MAX_NOTE_CHARS` (Jira refuses comments over 32,767 characters); the
transcript is cut first, saying how many lines were left out.
"""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec

from server.store import Row
from server.store.database import Executor

MAX_NOTE_CHARS = 30_000

#: Audit actions of a session that the write-back lists, and how each reads.
_COMMANDS = {"session.shell_started": "remote shell started", "session.shell_ended": "remote shell ended",
             "session.shell_refused": "remote shell refused", "session.shell_idle": "remote shell hung up (idle)",
             "device.process.end": "process ended", "device.service.action": "service action",
             "session.clipboard": "clipboard text"}
_FILES = {"session.file_sent": "sent to the device", "session.file_fetched": "fetched from the device"}


def marker(key: str) -> str:
    return f"helpline-writeback:{key}"


def _utc(ts: float | None) -> str:
    return "—" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours} h " if hours else "") + f"{rest // 60} min {rest % 60} s"


async def _authorization(db: Executor, session: Row) -> dict[str, Any]:
    by = session.get("answered_by") or ""
    if session.get("started_at") is None:
        return {"how": "none", "by": by, "text": f"the session never started ({session.get('end_reason') or '—'})"}
    if session.get("document_id"):
        doc = await db.fetchone("SELECT approvals FROM authority_documents WHERE document_id = ?",
                                (session["document_id"],))
        approvers: list[str] = []
        if doc is not None:
            for approval in msgspec.json.decode(doc["approvals"]):
                credential = str(approval.get("credential_id", "")) if isinstance(approval, dict) else ""
                holder = await db.fetchone("SELECT holder FROM authority_certs WHERE credential_id = ?"
                                           " ORDER BY uploaded_at DESC LIMIT 1", (credential,))
                approvers.append(str(holder["holder"]) if holder else credential)
        return {"how": "grant", "document_id": session["document_id"], "approvers": approvers,
                "text": f"unattended, under grant document {session['document_id']}"
                        f" approved by {', '.join(approvers) or 'nobody on record'}"
                        " and the technician's signed proof"}
    if by == "user":
        return {"how": "consent", "by": "device user", "text": f"consent by the device user at "
                f"{_utc(session.get('answered_at'))}"}
    return {"how": by or "unknown", "text": f"answered by {by or 'nobody on record'}"}


async def _audit_of(db: Executor, session: Row) -> list[dict[str, Any]]:
    """The session's own audit records (target is the device; the session id is in the details)."""
    rows = await db.fetchall("SELECT ts, actor, action, details FROM audit_log WHERE target = ? AND ts >= ?"
                             " AND ts <= ? ORDER BY seq", (session["device_id"], float(session["created_at"]) - 1,
                                                            float(session["ended_at"] or time.time()) + 120))
    found = []
    for row in rows:
        if row["action"] not in _COMMANDS and row["action"] not in _FILES:
            continue
        try:
            details = json.loads(row["details"])
        except ValueError:
            continue
        if isinstance(details, dict) and details.get("session_id") == session["id"]:
            found.append({"at": row["ts"], "actor": row["actor"], "action": row["action"], "details": details})
    return found


def _command_text(entry: dict[str, Any]) -> str:
    d = entry["details"]
    what = _COMMANDS[entry["action"]]
    if entry["action"] == "device.process.end":
        what += f" pid {d.get('pid')} ({d.get('outcome', '')})"
    elif entry["action"] == "device.service.action":
        what += f" {d.get('action')} {d.get('unit')} ({d.get('outcome', '')})"
    elif entry["action"] == "session.clipboard":
        what += f" {d.get('direction')}, {d.get('length')} characters"
    elif entry["action"].startswith("session.shell_"):
        extra = {k: v for k, v in d.items() if k != "session_id"}
        if extra:
            what += " " + ", ".join(f"{k}={v}" for k, v in sorted(extra.items()))
    return f"{_utc(entry['at'])} {entry['actor']}: {what}"


async def compose(db: Executor, session_id: str, recording_url: str, key: str) -> tuple[str, dict[str, Any]]:
    """The note for ``session_id`` (text with the marker line) and its facts as data."""
    session = await db.fetchone("SELECT s.*, d.hostname FROM sessions s LEFT JOIN devices d ON d.id = s.device_id"
                                " WHERE s.id = ?", (session_id,))
    if session is None:
        raise LookupError(f"no session {session_id}")
    notes = await db.fetchone("SELECT text FROM session_notes WHERE session_id = ?", (session_id,))
    chat = await db.fetchall("SELECT seq, sender, name, text, at FROM session_chat WHERE session_id = ? ORDER BY seq",
                             (session_id,))
    audit = await _audit_of(db, session)
    auth = await _authorization(db, session)
    started, ended = session.get("started_at"), session.get("ended_at")
    duration = (float(ended) - float(started)) if started and ended else 0.0
    files = [{"direction": _FILES[e["action"]], "name": e["details"].get("name"), "size": e["details"].get("size"),
              "sha256": e["details"].get("sha256"), "at": e["at"]} for e in audit if e["action"] in _FILES]
    commands = [_command_text(e) for e in audit if e["action"] in _COMMANDS]
    recording = recording_url if session.get("recording_path") else ""
    facts: dict[str, Any] = {
        "session_id": session_id, "device_id": session["device_id"], "hostname": session.get("hostname") or "",
        "technician": session["technician_user"], "technician_name": session["technician_name"],
        "mode": session.get("mode") or session["requested_mode"], "started_at": started, "ended_at": ended,
        "duration_s": round(duration, 1), "end_reason": session.get("end_reason") or "",
        "ended_by": session.get("ended_by") or "", "authorization": auth,
        "notes": notes["text"] if notes else "",
        "chat": [{"sender": c["sender"], "name": c["name"], "text": c["text"], "at": c["at"]} for c in chat],
        "files": files, "commands": commands, "recording_url": recording}
    head = [f"Helpline remote session {session_id}",
            f"Device: {facts['hostname'] or session['device_id']} ({session['device_id']})",
            f"Technician: {session['technician_name']} ({session['technician_user']}), {facts['mode']} mode",
            f"When: {_utc(started)} to {_utc(ended)}, duration {_duration(duration)}",
            f"Authorized: {auth['text']}",
            f"Ended: {facts['end_reason'] or '—'} (by {facts['ended_by'] or '—'})", marker(key)]
    body = ["", "Notes:", facts["notes"] or "(none)", "",
            "File transfers:", *([f"- {f['direction']}: {f['name']} ({f['size']} bytes, sha256 {f['sha256']})"
                                  for f in files] or ["(none)"]), "",
            "Commands and actions:", *([f"- {c}" for c in commands] or ["(none)"]), "",
            f"Recording: {recording or '(not recorded)'}"]
    transcript = [f"[{_utc(c['at'])}] {c['name'] or c['sender']} ({c['sender']}): {c['text']}" for c in chat]
    fixed = len("\n".join(head + body)) + 40
    kept: list[str] = []
    used = fixed
    for line in transcript:
        if used + len(line) + 1 > MAX_NOTE_CHARS - 60:
            break
        kept.append(line)
        used += len(line) + 1
    if len(kept) < len(transcript):
        kept.append(f"(… {len(transcript) - len(kept)} more lines in Helpline)")
    text = "\n".join([*head, "", "Chat transcript:", *(kept or ["(no chat)"]), *body])
    return text[:MAX_NOTE_CHARS], facts
