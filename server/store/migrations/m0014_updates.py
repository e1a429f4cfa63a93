"""Signed self-update (issue 21): uploaded release artifacts, rollouts in waves, per-device progress.

The release manifests themselves are ``release`` documents in ``authority_documents``; the server
stores the artifact bytes under ``DATA/updates/<sha256>`` and only relays both.
"""

VERSION = 14

STATEMENTS = [
    """CREATE TABLE update_artifacts (
        sha256 TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        name TEXT NOT NULL,
        size {bigint} NOT NULL,
        uploaded_at {real} NOT NULL,
        uploaded_by TEXT NOT NULL
    )""",
    "CREATE INDEX update_artifacts_version ON update_artifacts (version)",
    """CREATE TABLE update_rollouts (
        id TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        document_id TEXT NOT NULL,
        artifact_name TEXT NOT NULL,
        artifact_sha256 TEXT NOT NULL,
        waves TEXT NOT NULL,
        failure_threshold {real} NOT NULL,
        status TEXT NOT NULL,
        wave INTEGER NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        device_count INTEGER NOT NULL,
        created_at {real} NOT NULL,
        created_by TEXT NOT NULL,
        updated_at {real} NOT NULL
    )""",
    "CREATE INDEX update_rollouts_status ON update_rollouts (status)",
    """CREATE TABLE update_targets (
        rollout_id TEXT NOT NULL REFERENCES update_rollouts(id) ON DELETE CASCADE,
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        wave INTEGER NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        offered_at {real},
        updated_at {real} NOT NULL,
        PRIMARY KEY (rollout_id, device_id)
    )""",
    "CREATE INDEX update_targets_device ON update_targets (device_id)",
]
