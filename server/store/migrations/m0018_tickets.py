"""Tickets (issue 19): ITSM connectors, links from sessions and requests, and the write-back outbox.

Credentials are never stored here in clear: ``secret`` holds AES-GCM ciphertext whose key lives
in a file in the server's data directory (:mod:`server.tickets.secrets_box`).
``ticket_writebacks`` is the outbox: one row per (session, link), its ``idempotency_key`` stable
across retries, ``in_doubt`` set while a send's outcome is unknown (checked before re-sending).
"""

VERSION = 18

STATEMENTS = [
    """CREATE TABLE ticket_connectors (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        url TEXT NOT NULL,
        settings TEXT NOT NULL DEFAULT '{{}}',
        secret {blob},
        enabled INTEGER NOT NULL DEFAULT 1,
        created_at {real} NOT NULL,
        created_by TEXT NOT NULL,
        updated_at {real} NOT NULL,
        updated_by TEXT NOT NULL
    )""",
    """CREATE TABLE ticket_links (
        id TEXT PRIMARY KEY,
        connector_id TEXT NOT NULL REFERENCES ticket_connectors(id),
        ticket_key TEXT NOT NULL,
        remote_id TEXT NOT NULL DEFAULT '',
        ticket_url TEXT NOT NULL DEFAULT '',
        session_id TEXT,
        request_id TEXT,
        group_name TEXT NOT NULL,
        created_ticket INTEGER NOT NULL DEFAULT 0,
        created_at {real} NOT NULL,
        created_by TEXT NOT NULL
    )""",
    "CREATE INDEX ticket_links_session ON ticket_links (session_id)",
    "CREATE INDEX ticket_links_request ON ticket_links (request_id)",
    """CREATE TABLE ticket_writebacks (
        id {id_pk},
        link_id TEXT NOT NULL REFERENCES ticket_links(id),
        session_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at {real} NOT NULL,
        claimed_until {real},
        in_doubt INTEGER NOT NULL DEFAULT 0,
        body TEXT,
        note_id TEXT NOT NULL DEFAULT '',
        last_error TEXT NOT NULL DEFAULT '',
        created_at {real} NOT NULL,
        sent_at {real},
        failed_at {real},
        UNIQUE (link_id, session_id)
    )""",
    "CREATE INDEX ticket_writebacks_due ON ticket_writebacks (state, next_attempt_at)",
    "CREATE INDEX ticket_writebacks_session ON ticket_writebacks (session_id)",
]
