"""The server holds no authorizing key any more (issue 11): server-signed grants and scripts are gone.

- ``grants`` (documents the server itself used to sign) is dropped; unattended
  access and tasks are authorized by approver-signed documents (``authority_documents``).
- A task names the approver-signed TaskAuthorization it runs under (``tasks.document_id``); the
  server-signed grant and script signature columns are dropped. Tasks made under the old model
  can never run again (agents refuse them), so their open runs are cancelled and the tasks with them.
- ``sessions.grant_id`` (a server-signed grant named by a session) is dropped.
- ``authority_handovers`` keeps the one-time hand-over from the old signing key to the org root
  (``helpline trust adopt``) that the server relays to agents enrolled before the root existed.
"""

VERSION = 10

#: Destructive (tests/test_migrations_contract.py): from before more than one node could share a database
#: (issue 20), so no older node ever ran beside it; the upgrade needed every node stopped (issue 11).
SAFE_BECAUSE = "before multi-node (issue 20): no older node runs beside it"

STATEMENTS = [
    "DROP TABLE grants",
    "ALTER TABLE tasks ADD COLUMN document_id TEXT",
    "UPDATE task_runs SET status = 'cancelled', reason = 'made under a server-signed grant, which agents no longer"
    " honour (issue 11)' WHERE status IN ('held', 'queued', 'sent', 'waiting')",
    "UPDATE tasks SET status = 'cancelled' WHERE status IN ('pending_approval', 'active', 'paused')",
    "UPDATE rollouts SET status = 'cancelled', reason = 'made under a server-signed grant, which agents no longer"
    " honour (issue 11)' WHERE status = 'running'",
    "ALTER TABLE tasks DROP COLUMN grant_id",
    "ALTER TABLE tasks DROP COLUMN grant_document",
    "ALTER TABLE tasks DROP COLUMN grant_signature",
    "ALTER TABLE tasks DROP COLUMN script_signature",
    "ALTER TABLE sessions DROP COLUMN grant_id",
    """CREATE TABLE authority_handovers (
        body_sha256 TEXT PRIMARY KEY,
        legacy_key_sha256 TEXT NOT NULL,
        root_fingerprint TEXT NOT NULL,
        handover TEXT NOT NULL,
        uploaded_at {real} NOT NULL,
        uploaded_by TEXT NOT NULL
    )""",
]
