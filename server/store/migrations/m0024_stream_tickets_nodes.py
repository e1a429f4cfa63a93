"""Sessions across nodes (issue 20): stream tickets, and the nodes every node registers in.

``stream_tickets``: a technician signed in on node A watches a session whose tunnel ends meet on
node C. A mints a ticket (single use, valid 30 s: TICKET_TTL_S) bound to the session, the technician, the login
it was minted under and the node that redeems it; only its SHA-256 is stored. C spends it on the
websocket upgrade (server/sessions/tickets.py).

``nodes``: each node on the bus records its id and the console URL technicians reach it at, and
refreshes ``seen_at``; those URLs are the origins a ticket may come from and the sources the console's
CSP lets a page connect to (server/bus/nodes.py). Only new tables: older code runs on as before.
"""

VERSION = 24

STATEMENTS = [
    """CREATE TABLE stream_tickets (
        token_hash TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        login_id TEXT,
        node TEXT NOT NULL,
        origin TEXT NOT NULL,
        created_at {real} NOT NULL,
        expires_at {real} NOT NULL,
        used_at {real}
    )""",
    "CREATE INDEX stream_tickets_expires ON stream_tickets (expires_at)",
    """CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        started_at {real} NOT NULL,
        seen_at {real} NOT NULL
    )""",
]
