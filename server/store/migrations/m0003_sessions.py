"""Remote sessions (lifecycle, tunnel token, recording) and unattended-access grants."""

VERSION = 3

STATEMENTS = [
    """CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        group_name TEXT NOT NULL,
        technician_user TEXT NOT NULL,
        technician_name TEXT NOT NULL,
        technician_role TEXT NOT NULL,
        requested_mode TEXT NOT NULL,
        mode TEXT,
        reason TEXT NOT NULL DEFAULT '',
        grant_id TEXT,
        state TEXT NOT NULL,
        token_hash TEXT NOT NULL,
        token_cert_serial TEXT NOT NULL,
        token_expires_at {real} NOT NULL,
        token_used INTEGER NOT NULL DEFAULT 0,
        created_at {real} NOT NULL,
        answered_at {real},
        answered_by TEXT,
        answer_reason TEXT,
        started_at {real},
        ended_at {real},
        end_reason TEXT,
        ended_by TEXT,
        bytes_to_technician {bigint} NOT NULL DEFAULT 0,
        bytes_to_agent {bigint} NOT NULL DEFAULT 0,
        refused_inputs INTEGER NOT NULL DEFAULT 0,
        recording_path TEXT
    )""",
    "CREATE INDEX sessions_device ON sessions (device_id, created_at)",
    """CREATE TABLE grants (
        grant_id TEXT PRIMARY KEY,
        document TEXT NOT NULL,
        signature TEXT,
        status TEXT NOT NULL,
        devices TEXT NOT NULL DEFAULT '',
        groups TEXT NOT NULL DEFAULT '',
        created_by TEXT NOT NULL,
        created_at {real} NOT NULL,
        approved_by TEXT,
        approved_at {real},
        revoked_by TEXT,
        revoked_at {real},
        not_after {real} NOT NULL
    )""",
    "CREATE INDEX grants_status ON grants (status, not_after)",
]
