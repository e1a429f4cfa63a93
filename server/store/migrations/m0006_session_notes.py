"""Session notes: the technician's own words about a session ("what I did, ticket number")."""

VERSION = 6

STATEMENTS = [
    """CREATE TABLE session_notes (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id),
        text TEXT NOT NULL,
        author TEXT NOT NULL,
        created_at {real} NOT NULL,
        updated_at {real} NOT NULL,
        revision INTEGER NOT NULL DEFAULT 1
    )""",
]
