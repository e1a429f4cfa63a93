"""Support codes (issue 18 part 4): short-lived single-use codes that let a device that is not
enrolled (a contractor's laptop) get one attended session, and the pseudo-devices they create.

``support_codes`` keeps only an HMAC of each code (:mod:`server.support_codes.codes`), never the
code. ``support_clients`` is the redeemed side: one row per successful redeem, the id its
session's ``sessions.device_id`` names. It is a separate table so a support client is never
a CMDB device (no inventory, no device list, no enrollment) while its session history and
audit still name it.
"""

VERSION = 17

STATEMENTS = [
    """CREATE TABLE support_codes (
        id TEXT PRIMARY KEY,
        code_hash TEXT NOT NULL UNIQUE,
        group_name TEXT NOT NULL,
        technician_user TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        created_at {real} NOT NULL,
        expires_at {real} NOT NULL,
        used_at {real},
        used_from TEXT NOT NULL DEFAULT '',
        revoked_at {real},
        revoked_by TEXT NOT NULL DEFAULT '',
        client_id TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX support_codes_live ON support_codes (used_at, revoked_at, expires_at)",
    """CREATE TABLE support_clients (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL DEFAULT 'support_client',
        code_id TEXT NOT NULL REFERENCES support_codes(id),
        group_name TEXT NOT NULL,
        technician_user TEXT NOT NULL,
        hostname TEXT NOT NULL DEFAULT '',
        os_user TEXT NOT NULL DEFAULT '',
        address TEXT NOT NULL DEFAULT '',
        connected_at {real} NOT NULL,
        ended_at {real},
        session_id TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX support_clients_connected ON support_clients (connected_at)",
]
