"""All SQL of the tickets area: connectors, links, the write-back outbox."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from server.store import Database, Row
from server.store.database import Executor


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


# --- connectors -----------------------------------------------------------------------------

async def connectors(db: Executor) -> list[Row]:
    return await db.fetchall("SELECT * FROM ticket_connectors ORDER BY name")


async def connector(db: Executor, connector_id: str) -> Row | None:
    return await db.fetchone("SELECT * FROM ticket_connectors WHERE id = ?", (connector_id,))


async def insert_connector(db: Executor, row: dict[str, Any]) -> None:
    await db.execute("INSERT INTO ticket_connectors (id, name, kind, url, settings, secret, enabled, created_at,"
                     " created_by, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (row["id"], row["name"], row["kind"], row["url"], json.dumps(row["settings"]), row["secret"],
                      int(row["enabled"]), row["at"], row["by"], row["at"], row["by"]))


async def update_connector(db: Executor, row: dict[str, Any]) -> None:
    await db.execute("UPDATE ticket_connectors SET name = ?, url = ?, settings = ?, secret = ?, enabled = ?,"
                     " updated_at = ?, updated_by = ? WHERE id = ?",
                     (row["name"], row["url"], json.dumps(row["settings"]), row["secret"], int(row["enabled"]),
                      row["at"], row["by"], row["id"]))


async def delete_connector(db: Executor, connector_id: str) -> int:
    return await db.execute("DELETE FROM ticket_connectors WHERE id = ?", (connector_id,))


async def links_of_connector(db: Executor, connector_id: str) -> int:
    row = await db.fetchone("SELECT COUNT(*) AS n FROM ticket_links WHERE connector_id = ?", (connector_id,))
    return int(row["n"]) if row else 0


# --- links ----------------------------------------------------------------------------------

async def insert_link(db: Executor, link: dict[str, Any]) -> None:
    await db.execute("INSERT INTO ticket_links (id, connector_id, ticket_key, remote_id, ticket_url, session_id,"
                     " request_id, group_name, created_ticket, created_at, created_by)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (link["id"], link["connector_id"], link["ticket_key"], link["remote_id"], link["ticket_url"],
                      link["session_id"], link["request_id"], link["group_name"], int(link["created_ticket"]),
                      link["created_at"], link["created_by"]))


async def reserve_created_link(db: Executor, link: dict[str, Any]) -> bool:
    """Insert a created-ticket link before the ticket exists (its key empty); False when the request already
    has one through that connector (the store's unique index decides, so two nodes cannot both win)."""
    return await db.execute(
        "INSERT INTO ticket_links (id, connector_id, ticket_key, remote_id, ticket_url, session_id, request_id,"
        " group_name, created_ticket, created_at, created_by) VALUES (?, ?, '', '', '', NULL, ?, ?, 1, ?, ?)"
        " ON CONFLICT DO NOTHING", (link["id"], link["connector_id"], link["request_id"], link["group_name"],
                                    link["created_at"], link["created_by"])) == 1


async def complete_created_link(db: Executor, link_id: str, key: str, remote_id: str, url: str) -> None:
    await db.execute("UPDATE ticket_links SET ticket_key = ?, remote_id = ?, ticket_url = ? WHERE id = ?",
                     (key, remote_id, url, link_id))


async def drop_reservation(db: Executor, link_id: str) -> None:
    """Remove a reservation whose ticket was not created (the remote refused, or it went stale)."""
    await db.execute("DELETE FROM ticket_links WHERE id = ? AND ticket_key = ''", (link_id,))


async def link(db: Executor, link_id: str) -> Row | None:
    return await db.fetchone("SELECT l.*, c.name AS connector_name, c.kind AS connector_kind FROM ticket_links l"
                             " JOIN ticket_connectors c ON c.id = l.connector_id WHERE l.id = ?", (link_id,))


async def set_remote_id(db: Executor, link_id: str, remote_id: str, url: str) -> None:
    await db.execute("UPDATE ticket_links SET remote_id = ?, ticket_url = ? WHERE id = ?", (remote_id, url, link_id))


async def links_for(db: Executor, *, session_id: str | None = None, request_id: str | None = None) -> list[Row]:
    sql = ("SELECT l.*, c.name AS connector_name, c.kind AS connector_kind FROM ticket_links l"
           " JOIN ticket_connectors c ON c.id = l.connector_id WHERE ")
    if session_id is not None:
        return await db.fetchall(sql + "l.session_id = ? ORDER BY l.created_at", (session_id,))
    return await db.fetchall(sql + "l.request_id = ? ORDER BY l.created_at", (request_id,))


async def find_link(db: Executor, connector_id: str, key: str, *, session_id: str | None,
                    request_id: str | None) -> Row | None:
    return await db.fetchone("SELECT id FROM ticket_links WHERE connector_id = ? AND ticket_key = ?"
                             " AND COALESCE(session_id, '') = ? AND COALESCE(request_id, '') = ?",
                             (connector_id, key, session_id or "", request_id or ""))


async def created_link_for_request(db: Executor, connector_id: str, request_id: str) -> Row | None:
    return await db.fetchone("SELECT * FROM ticket_links WHERE connector_id = ? AND request_id = ?"
                             " AND created_ticket = 1", (connector_id, request_id))


async def write_back_links(db: Executor, session_id: str) -> list[Row]:
    """The links a session's end writes to: its own, and those of the request it was started from."""
    return await db.fetchall(
        "SELECT l.id FROM ticket_links l WHERE l.ticket_key <> '' AND (l.session_id = ? OR l.request_id IN"
        " (SELECT s.request_id FROM sessions s WHERE s.id = ? AND s.request_id IS NOT NULL))",
        (session_id, session_id))


# --- the outbox -----------------------------------------------------------------------------

async def enqueue(db: Executor, link_id: str, session_id: str, key: str, due: float) -> bool:
    """One outbox row per (session, link); a second enqueue of the same pair does nothing."""
    changed = await db.execute(
        "INSERT INTO ticket_writebacks (link_id, session_id, idempotency_key, state, next_attempt_at, created_at)"
        " VALUES (?, ?, ?, 'pending', ?, ?) ON CONFLICT DO NOTHING", (link_id, session_id, key, due, time.time()))
    return changed == 1


async def ended_without_outbox(db: Executor, limit: int = 100) -> list[Row]:
    """Ended sessions with a link but no outbox row (the end hook never ran: a crash, another node)."""
    return await db.fetchall(
        "SELECT s.id AS session_id, l.id AS link_id FROM sessions s JOIN ticket_links l"
        " ON l.session_id = s.id OR (s.request_id IS NOT NULL AND l.request_id = s.request_id"
        " AND l.created_at <= s.ended_at)"
        " WHERE s.ended_at IS NOT NULL AND l.ticket_key <> '' AND NOT EXISTS (SELECT 1 FROM ticket_writebacks w"
        " WHERE w.link_id = l.id AND w.session_id = s.id) LIMIT ?", (limit,))


async def due(db: Executor, now: float, limit: int = 20) -> list[Row]:
    return await db.fetchall("SELECT * FROM ticket_writebacks WHERE state = 'pending' AND next_attempt_at <= ?"
                             " AND (claimed_until IS NULL OR claimed_until < ?) ORDER BY next_attempt_at LIMIT ?",
                             (now, now, limit))


async def claim(db: Executor, row_id: int, now: float, hold_s: float) -> float | None:
    """Take a due row for ``hold_s`` seconds: the claim (its ``claimed_until``), which every later update of
    the row names, so a worker whose claim ran out and was taken by another changes nothing; None when
    another worker (node) holds it."""
    until = now + hold_s
    taken = await db.execute("UPDATE ticket_writebacks SET claimed_until = ? WHERE id = ? AND state = 'pending'"
                             " AND (claimed_until IS NULL OR claimed_until < ?)", (until, row_id, now))
    return until if taken == 1 else None


async def set_body(db: Executor, row_id: int, claim: float, body: str) -> bool:
    return await db.execute("UPDATE ticket_writebacks SET body = ? WHERE id = ? AND claimed_until = ?",
                            (body, row_id, claim)) == 1


async def mark_in_doubt(db: Executor, row_id: int, claim: float) -> bool:
    """False when the claim was lost (another worker holds the row): the caller must not send."""
    return await db.execute("UPDATE ticket_writebacks SET in_doubt = 1 WHERE id = ? AND claimed_until = ?",
                            (row_id, claim)) == 1


async def mark_sent(db: Executor, row_id: int, claim: float, note_id: str, attempts: int, now: float) -> bool:
    """Sent: the stored copy of the note (transcript, notes, hostname) is dropped; it is in the ticket now."""
    return await db.execute("UPDATE ticket_writebacks SET state = 'sent', note_id = ?, attempts = ?, sent_at = ?,"
                            " in_doubt = 0, claimed_until = NULL, last_error = '', body = NULL"
                            " WHERE id = ? AND claimed_until = ?", (note_id[:200], attempts, now, row_id, claim)) == 1


async def mark_retry(db: Executor, row_id: int, claim: float, attempts: int, error: str, next_at: float,
                     in_doubt: bool) -> bool:
    return await db.execute("UPDATE ticket_writebacks SET attempts = ?, last_error = ?, next_attempt_at = ?,"
                            " in_doubt = ?, claimed_until = NULL WHERE id = ? AND claimed_until = ?",
                            (attempts, error[:500], next_at, int(in_doubt), row_id, claim)) == 1


async def mark_failed(db: Executor, row_id: int, claim: float, attempts: int, error: str, now: float,
                      in_doubt: bool) -> bool:
    return await db.execute("UPDATE ticket_writebacks SET state = 'failed', attempts = ?, last_error = ?,"
                            " failed_at = ?, in_doubt = ?, claimed_until = NULL WHERE id = ? AND claimed_until = ?",
                            (attempts, error[:500], now, int(in_doubt), row_id, claim)) == 1


async def retry_failed(db: Executor, row_id: int, now: float) -> int:
    return await db.execute("UPDATE ticket_writebacks SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                            " failed_at = NULL WHERE id = ? AND state = 'failed'", (now, row_id))


async def writeback(db: Executor, row_id: int) -> Row | None:
    return await db.fetchone("SELECT * FROM ticket_writebacks WHERE id = ?", (row_id,))


async def writebacks_for(db: Executor, link_ids: list[str]) -> list[Row]:
    if not link_ids:
        return []
    marks = ", ".join("?" for _ in link_ids)  # placeholders only; the values are bound
    return await db.fetchall(f"SELECT * FROM ticket_writebacks WHERE link_id IN ({marks}) ORDER BY id",  # noqa: S608
                             tuple(link_ids))


async def writebacks_of_session(db: Executor, session_id: str) -> list[Row]:
    return await db.fetchall("SELECT * FROM ticket_writebacks WHERE session_id = ? ORDER BY id", (session_id,))


async def recent_writebacks(db: Database, state: str | None, limit: int = 200) -> list[Row]:
    sql = ("SELECT w.*, l.ticket_key, l.ticket_url, l.request_id, l.group_name, c.name AS connector_name,"
           " c.kind AS connector_kind FROM ticket_writebacks w JOIN ticket_links l ON l.id = w.link_id"
           " JOIN ticket_connectors c ON c.id = l.connector_id")
    params: tuple[Any, ...] = ()
    if state:
        sql += " WHERE w.state = ?"
        params = (state,)
    return await db.fetchall(sql + " ORDER BY w.id DESC LIMIT ?", (*params, limit))
