"""Console accounts: users, per-group rights, cookie sessions, API tokens."""

VERSION = 4

STATEMENTS = [
    """CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        totp_secret TEXT,
        totp_pending TEXT,
        totp_last_step {bigint} NOT NULL DEFAULT 0,
        disabled INTEGER NOT NULL DEFAULT 0,
        failed_logins INTEGER NOT NULL DEFAULT 0,
        locked_until {real},
        created_at {real} NOT NULL,
        last_login {real}
    )""",
    """CREATE TABLE user_group_rights (
        user_id TEXT NOT NULL REFERENCES users(id),
        group_name TEXT NOT NULL,
        rights TEXT NOT NULL,
        PRIMARY KEY (user_id, group_name)
    )""",
    """CREATE TABLE console_sessions (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL REFERENCES users(id),
        csrf_token TEXT NOT NULL,
        created_at {real} NOT NULL,
        last_seen {real} NOT NULL,
        revoked_at {real},
        peer TEXT NOT NULL DEFAULT '',
        user_agent TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX console_sessions_user ON console_sessions (user_id)",
    """CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL REFERENCES users(id),
        name TEXT NOT NULL,
        created_at {real} NOT NULL,
        expires_at {real},
        last_used {real},
        revoked_at {real}
    )""",
    "CREATE INDEX api_tokens_user ON api_tokens (user_id)",
]
