"""Authority the server stores and relays but never makes (issue 11): the org root's public half and its
rotations, credential certificates, revocation lists, approver-signed documents, and what each device
reported it accepted.

Nothing here can authorize anything on a device: every row is checked there against the root the
device was installed with. ``authority_roots`` is the chain the server relays (its first row of the
newest ``chain`` is the origin, later rows came by rotation); ``authority_revocations`` keeps every
list uploaded (agents take the highest sequence); ``authority_documents`` keeps the body exactly as
signed and the approvals gathered so far (JSON), ``devices``/``groups`` copied out for routing.
"""

VERSION = 8

STATEMENTS = [
    """CREATE TABLE authority_roots (
        seq {id_pk},
        chain INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        root TEXT NOT NULL,
        rotation TEXT,
        uploaded_at {real} NOT NULL,
        uploaded_by TEXT NOT NULL
    )""",
    """CREATE TABLE authority_certs (
        body_sha256 TEXT PRIMARY KEY,
        credential_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        holder TEXT NOT NULL,
        not_after {real} NOT NULL,
        cert TEXT NOT NULL,
        uploaded_at {real} NOT NULL,
        uploaded_by TEXT NOT NULL
    )""",
    "CREATE INDEX authority_certs_credential ON authority_certs (credential_id)",
    """CREATE TABLE authority_revocations (
        body_sha256 TEXT PRIMARY KEY,
        sequence {bigint} NOT NULL,
        issued_at {real} NOT NULL,
        expires_at {real} NOT NULL,
        list TEXT NOT NULL,
        uploaded_at {real} NOT NULL,
        uploaded_by TEXT NOT NULL
    )""",
    """CREATE TABLE authority_documents (
        document_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        body_sha256 TEXT NOT NULL,
        approvals TEXT NOT NULL,
        devices TEXT NOT NULL,
        groups TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at {real} NOT NULL,
        created_by TEXT NOT NULL,
        updated_at {real} NOT NULL,
        withdrawn_at {real},
        withdrawn_by TEXT
    )""",
    """CREATE TABLE authority_device_status (
        device_id TEXT PRIMARY KEY,
        root_fingerprint TEXT,
        unattended_ok INTEGER NOT NULL,
        problem TEXT NOT NULL,
        revocation_sequence {bigint} NOT NULL,
        accepted TEXT NOT NULL,
        refused TEXT NOT NULL,
        reported_at {real} NOT NULL
    )""",
    "ALTER TABLE sessions ADD COLUMN document_id TEXT",
]
