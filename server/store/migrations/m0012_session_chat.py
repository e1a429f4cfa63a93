"""Session chat: the transcript between technician and device user, kept with the session (issue 15)."""

VERSION = 12

STATEMENTS = [
    """CREATE TABLE session_chat (
        session_id TEXT NOT NULL REFERENCES sessions(id),
        seq INTEGER NOT NULL,
        sender TEXT NOT NULL,
        name TEXT NOT NULL,
        text TEXT NOT NULL,
        at {real} NOT NULL,
        PRIMARY KEY (session_id, seq)
    )""",
]
