"""Device recovery (issue 20): the one-time nonces a device with an expired certificate proves its key over.

A nonce is handed out by any node and consumed on any node, so it lives in the shared database
(server/recovery.py): its SHA-256 (never the nonce), the device it was asked for, when it was made,
until when it counts, from which address, and when it was used (rows are kept for a while after:
the per-device rate limit counts them).

Only a new table: code that does not know it runs on as before.
"""

VERSION = 26

STATEMENTS = [
    """CREATE TABLE device_recovery_nonces (
        nonce_hash TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        created_at {real} NOT NULL,
        expires_at {real} NOT NULL,
        peer TEXT NOT NULL DEFAULT '',
        used_at {real}
    )""",
    "CREATE INDEX device_recovery_nonces_device ON device_recovery_nonces (device_id, created_at)",
]
