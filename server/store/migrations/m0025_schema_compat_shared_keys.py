"""Rolling upgrades and shared keys (issue 20): the schema's compatibility marker, the keys' fingerprints.

``schema_compat``: one row per migration that breaks older code (it declares ``OLDEST_CODE``): the
oldest code — named by the newest migration it knows — that can still run on this database. A
node whose code is older refuses to start (server/store/migrate.py). Code from before this table
does not read it; no migration breaks it yet.

``shared_key_fingerprints``: HMAC-SHA256 fingerprints of the keys every node must share (never the
keys), recorded by the first node with a bus, compared by every later one (server/shared_keys.py).

Only new tables: code that does not know them runs on as before.
"""

VERSION = 25

STATEMENTS = [
    """CREATE TABLE schema_compat (
        version INTEGER PRIMARY KEY,
        oldest_code INTEGER NOT NULL,
        reason TEXT NOT NULL
    )""",
    """CREATE TABLE shared_key_fingerprints (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        node TEXT NOT NULL,
        recorded_at {real} NOT NULL
    )""",
]
