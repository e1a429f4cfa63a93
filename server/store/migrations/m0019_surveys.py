"""CSAT surveys (issue 19): one per resolved support request, asked once, answered at most once.

``delivered_at`` is set when ``survey.ask`` went out to the device; a survey of an offline
device waits with it NULL and is sent when the device connects again.
"""

VERSION = 19

STATEMENTS = [
    """CREATE TABLE surveys (
        request_id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        group_name TEXT NOT NULL,
        technician TEXT NOT NULL DEFAULT '',
        asked_at {real} NOT NULL,
        delivered_at {real},
        answered_at {real},
        score INTEGER,
        comment TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX surveys_undelivered ON surveys (device_id, delivered_at)",
]
