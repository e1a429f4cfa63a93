"""Support requests from the device (issue 18): the live queue, its event log, sessions started from one.

``support_request_events`` is the source of the queue's KPIs (issue 19): every state change writes one
row. The screenshot and the device's diagnostics/self-service attempt live in their own table so the
queue's list never reads megabytes of PNG.
"""

VERSION = 16

STATEMENTS = [
    """CREATE TABLE support_requests (
        id TEXT PRIMARY KEY,
        number INTEGER NOT NULL UNIQUE,
        device_id TEXT NOT NULL,
        local_id TEXT NOT NULL,
        group_name TEXT NOT NULL,
        requester TEXT NOT NULL DEFAULT '',
        summary TEXT NOT NULL,
        details TEXT NOT NULL DEFAULT '',
        urgency TEXT NOT NULL,
        state TEXT NOT NULL,
        category TEXT NOT NULL DEFAULT '',
        created_at {real} NOT NULL,
        claimed_at {real},
        claimed_by TEXT NOT NULL DEFAULT '',
        claimed_by_name TEXT NOT NULL DEFAULT '',
        first_session_at {real},
        resolved_at {real},
        resolved_by TEXT NOT NULL DEFAULT '',
        resolution_notes TEXT NOT NULL DEFAULT '',
        reopened_count INTEGER NOT NULL DEFAULT 0,
        escalated INTEGER NOT NULL DEFAULT 0,
        last_note TEXT NOT NULL DEFAULT '',
        has_screenshot INTEGER NOT NULL DEFAULT 0,
        announced_waiting_at {real},
        updated_at {real} NOT NULL,
        UNIQUE (device_id, local_id)
    )""",
    "CREATE INDEX support_requests_state ON support_requests (state, group_name, created_at)",
    """CREATE TABLE support_request_attachments (
        request_id TEXT PRIMARY KEY REFERENCES support_requests(id) ON DELETE CASCADE,
        screenshot {blob},
        diagnostics TEXT NOT NULL DEFAULT '[]',
        attempt TEXT NOT NULL DEFAULT 'null'
    )""",
    """CREATE TABLE support_request_events (
        id {id_pk},
        request_id TEXT NOT NULL REFERENCES support_requests(id) ON DELETE CASCADE,
        at {real} NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{{}}'
    )""",
    "CREATE INDEX support_request_events_request ON support_request_events (request_id, id)",
    "CREATE INDEX support_request_events_at ON support_request_events (at, kind)",
    "ALTER TABLE sessions ADD COLUMN request_id TEXT",
    "CREATE INDEX sessions_request ON sessions (request_id)",
]
