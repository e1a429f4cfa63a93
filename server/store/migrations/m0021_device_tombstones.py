"""Purged devices (issue 20): a tombstone per device whose data was purged.

The ``devices`` row itself stays (status ``revoked``, hostname cleared), so its id is never
issued again and every check that refuses a revoked device keeps refusing it; this table says
when, by whom, and how much was deleted (server/lifecycle/purge.py).
"""

VERSION = 21

STATEMENTS = [
    """CREATE TABLE device_tombstones (
        device_id TEXT PRIMARY KEY,
        purged_at {real} NOT NULL,
        purged_by TEXT NOT NULL,
        counts TEXT NOT NULL DEFAULT '{{}}'
    )""",
]
