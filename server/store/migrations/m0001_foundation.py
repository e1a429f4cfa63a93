"""Devices, enrollment tokens, groups, audit chain, cross-process events."""

VERSION = 1

STATEMENTS = [
    """CREATE TABLE device_groups (
        name TEXT PRIMARY KEY,
        created_at {real} NOT NULL
    )""",
    """CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        group_name TEXT NOT NULL REFERENCES device_groups(name),
        hostname TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'active',
        cert_serial TEXT NOT NULL,
        cert_not_after {real} NOT NULL,
        pending_cert_serial TEXT,
        pending_cert_not_after {real},
        enrolled_at {real} NOT NULL,
        last_seen {real},
        online INTEGER NOT NULL DEFAULT 0,
        revoked_at {real},
        agent_version TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX devices_group ON devices (group_name)",
    "CREATE INDEX devices_status ON devices (status, online)",
    """CREATE TABLE enrollment_tokens (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        group_name TEXT NOT NULL REFERENCES device_groups(name),
        created_at {real} NOT NULL,
        expires_at {real} NOT NULL,
        uses_left INTEGER NOT NULL,
        created_by TEXT NOT NULL
    )""",
    """CREATE TABLE audit_log (
        seq {bigint} PRIMARY KEY,
        ts {real} NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX audit_action ON audit_log (action, ts)",
    """CREATE TABLE events (
        seq {id_pk},
        ts {real} NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        payload TEXT NOT NULL DEFAULT '{{}}'
    )""",
]
