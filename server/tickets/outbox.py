"""Write-back when a session ends: a durable outbox, sent at most once per (session, ticket).

The session's end hook (:meth:`Outbox.session_ended`) adds one ``ticket_writebacks`` row per
ticket the session (or the request it came from) is linked to, keyed by a stable
``idempotency_key``; a sweep adds the rows a crash or another node's end never added. The
worker claims due rows (so two nodes never send one row at once; every later update of the row
names the claim, so a worker whose claim ran out changes nothing), composes the note once and
stores it (every retry sends the same text), and sends it. The stored copy (transcript, notes,
hostname) is dropped once the note is sent; chat retention and a device's purge drop it too.
Anything but a ticket-system error (the session gone, a bug) fails the row for good, logged once.

Exactly once: the note id the remote answers is recorded with the row. Just before sending,
the row is marked ``in_doubt``; an answer (success or a definite error) clears it. A row found
still in doubt — the server died between send and record, or the answer was lost to a timeout —
is first looked up in the ticket (ServiceNow's ``sys_journal_field``, Jira's comment list,
searching for the note's marker line) and only sent if it is not there; so is every retry
(a remote may have written the note and still answered an error). A webhook cannot be
asked, so it is re-sent with the same ``X-Helpline-Idempotency-Key`` for the receiver to drop.

Failures are retried with exponential backoff and jitter (at least the remote's
``Retry-After``); a permanent error (bad credentials, unknown ticket) or the
``max_attempts``-th failure marks the row ``failed``: shown on the session's and the request's
ticket list and in the console, audited as ``ticket.writeback_failed``, retried only by an admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from common.outage import OutageLog
from server import audit
from server.store import Database, Row, StoreUnavailable

from . import compose, repository
from .connectors import Connector, ConnectorSpec, Note, TicketRef, build
from .http import TicketError
from .secrets_box import SecretBox, SecretsUnavailable

log = logging.getLogger(__name__)


@dataclass
class OutboxSettings:
    max_attempts: int = 6
    backoff_s: float = 5.0
    backoff_cap_s: float = 900.0
    #: Wait after a session's end before composing, so actions audited in the background are in.
    settle_s: float = 2.0
    poll_s: float = 1.0
    #: How long a worker holds a claimed row (longer than any one delivery).
    claim_s: float = 120.0


def idempotency_key(session_id: str, link_id: str) -> str:
    return hashlib.sha256(f"helpline-writeback\x00{session_id}\x00{link_id}".encode()).hexdigest()[:32]


def spec_of(row: Row, box: SecretBox) -> ConnectorSpec:
    secret = box.decrypt(bytes(row["secret"]), row["id"]) if row["secret"] is not None else ""
    return ConnectorSpec(row["id"], row["name"], row["kind"], row["url"], json.loads(row["settings"]), secret)


class Outbox:
    def __init__(self, db: Callable[[], Database], box: SecretBox, recording_url: Callable[[str], str],
                 settings: OutboxSettings | None = None) -> None:
        self._db = db
        self.box = box
        self.recording_url = recording_url
        self.settings = settings or OutboxSettings()
        self.wake = asyncio.Event()

    async def session_ended(self, session_id: str) -> None:
        """The finish path's hook: queue the write-backs of ``session_id`` (never raises into it)."""
        try:
            if await self.enqueue(session_id):
                self.wake.set()
        except Exception:
            log.exception("could not queue the session's ticket write-backs", extra={"session_id": session_id})

    async def enqueue(self, session_id: str) -> int:
        db = self._db()
        added = 0
        for link in await repository.write_back_links(db, session_id):
            added += await repository.enqueue(db, link["id"], session_id, idempotency_key(session_id, link["id"]),
                                              time.time() + self.settings.settle_s)
        return added

    async def sweep(self) -> int:
        db = self._db()
        added = 0
        for row in await repository.ended_without_outbox(db):
            added += await repository.enqueue(db, row["link_id"], row["session_id"],
                                              idempotency_key(row["session_id"], row["link_id"]), time.time())
        return added

    async def run(self) -> None:
        outage = OutageLog(log, "ticket write-back pass")
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    await self.sweep()
                    await self.deliver_due(http)
                except StoreUnavailable as exc:
                    outage.failed(exc)
                except Exception:
                    log.exception("ticket write-back pass failed")
                else:
                    outage.succeeded()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.settings.poll_s)
                self.wake.clear()

    async def deliver_due(self, http: aiohttp.ClientSession) -> int:
        db = self._db()
        sent = 0
        for row in await repository.due(db, time.time()):
            # The clock is read per claim: a delivery can take minutes, so a claim computed from the batch's
            # start would already have run out for the later rows, and another node would take them too.
            claim = await repository.claim(db, row["id"], time.time(), self.settings.claim_s)
            if claim is not None:
                sent += await self._deliver(db, http, row, claim)
        return sent

    async def _deliver(self, db: Database, http: aiohttp.ClientSession, row: Row, claim: float) -> int:
        attempts = int(row["attempts"]) + 1
        in_doubt = bool(row["in_doubt"])
        sending = False
        try:
            link = await repository.link(db, row["link_id"])
            conn_row = None if link is None else await repository.connector(db, link["connector_id"])
            if link is None or conn_row is None:
                raise TicketError("the link or its connector was removed", permanent=True)
            if not conn_row["enabled"]:
                raise TicketError(f"connector {conn_row['name']} is disabled", permanent=True)
            connector = build(spec_of(conn_row, self.box), http)
            text, facts = await self._body(db, row, claim)
            ref = await self._ref(db, connector, link)
            marker = compose.marker(row["idempotency_key"])
            found = None
            if (in_doubt or row["attempts"] > 0) and connector.can_find_notes:  # a send may have landed
                found = await connector.find_note(ref, marker)
            if found is None:
                if not await repository.mark_in_doubt(db, row["id"], claim):
                    log.warning("ticket write-back claim lost before sending; left to its holder",
                                extra={"writeback": row["id"]})
                    return 0
                sending = True
                found = await connector.add_note(ref, Note(text, marker, facts))
            if not await repository.mark_sent(db, row["id"], claim, found, attempts, time.time()):
                log.warning("ticket write-back sent after its claim ran out; the holder finds the note by its marker",
                            extra={"writeback": row["id"]})
            await audit.append(db, "server", "ticket.writeback_sent", facts["device_id"],
                               {"session_id": row["session_id"], "ticket": ref.key, "connector": conn_row["name"],
                                "note_id": found, "attempts": attempts})
            return 1
        except SecretsUnavailable as exc:
            await self._failed(db, row, claim, attempts, TicketError(str(exc), permanent=True), in_doubt)
        except TicketError as exc:
            if sending:  # the remote answered an error: it did not write the note
                in_doubt = not exc.definite
            await self._failed(db, row, claim, attempts, exc, in_doubt)
        except StoreUnavailable:
            raise  # the database is down: the pass ends, the claim runs out, the row is tried again
        except Exception as exc:  # a session gone (LookupError), a stored body that does not decode, a bug:
            # retrying cannot help, and raising would end every pass here and log it every poll forever.
            log.exception("ticket write-back failed unexpectedly", extra={"writeback": row["id"]})
            error = TicketError(f"internal error: {type(exc).__name__}: {exc}"[:300], permanent=True)
            await self._failed(db, row, claim, attempts, error, in_doubt or sending)
        return 0

    async def _body(self, db: Database, row: Row, claim: float) -> tuple[str, dict[str, Any]]:
        if row["body"]:
            stored = json.loads(row["body"])
            return str(stored["text"]), dict(stored["facts"])
        text, facts = await compose.compose(db, row["session_id"], self.recording_url(row["session_id"]),
                                            row["idempotency_key"])
        await repository.set_body(db, row["id"], claim, json.dumps({"text": text, "facts": facts}))
        return text, facts

    async def _ref(self, db: Database, connector: Connector, link: Row) -> TicketRef:
        if link["remote_id"]:
            return TicketRef(link["ticket_key"], link["remote_id"], link["ticket_url"])
        ref = await connector.find(link["ticket_key"])
        await repository.set_remote_id(db, link["id"], ref.remote_id, ref.url)
        return ref

    async def _failed(self, db: Database, row: Row, claim: float, attempts: int, exc: TicketError,
                      in_doubt: bool) -> None:
        s = self.settings
        if exc.permanent or attempts >= s.max_attempts:
            if not await repository.mark_failed(db, row["id"], claim, attempts, exc.message, time.time(), in_doubt):
                return  # the claim ran out and another worker holds the row: its outcome stands
            device = await db.fetchone("SELECT device_id FROM sessions WHERE id = ?", (row["session_id"],))
            await audit.append(db, "server", "ticket.writeback_failed", device["device_id"] if device else "",
                               {"session_id": row["session_id"], "writeback": row["id"], "attempts": attempts,
                                "error": exc.message})
            log.error("ticket write-back failed for good", extra={"writeback": row["id"], "attempts": attempts,
                                                                  "error": exc.message})
            return
        delay = min(s.backoff_cap_s, s.backoff_s * 2 ** (attempts - 1)) * random.uniform(0.5, 1.0)
        if exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        log.warning("ticket write-back failed; will retry", extra={"writeback": row["id"], "attempt": attempts,
                                                                   "retry_in_s": round(delay, 2),
                                                                   "error": exc.message})
        await repository.mark_retry(db, row["id"], claim, attempts, exc.message, time.time() + delay, in_doubt)
