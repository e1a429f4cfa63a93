"""Passkeys (WebAuthn): public keys only — the private halves never leave the people's authenticators.

``passkeys`` keeps what python-fido2 verified at registration: the WebAuthn credential id
(base64url), the COSE public key (base64 of its CBOR bytes, exactly what the administrator
certifies), the relying party and origins it is bound to, and the signature counter seen last.
``passkey_challenges`` holds the short-lived, single-use state between a ceremony's two steps
(registration, the second step of a login); only the SHA-256 of each ticket is stored.
"""

VERSION = 7

STATEMENTS = [
    """CREATE TABLE passkeys (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id),
        webauthn_id TEXT NOT NULL UNIQUE,
        cose_key TEXT NOT NULL,
        rp_id TEXT NOT NULL,
        origins TEXT NOT NULL,
        sign_count {bigint} NOT NULL DEFAULT 0,
        label TEXT NOT NULL,
        created_at {real} NOT NULL,
        last_used {real},
        revoked_at {real}
    )""",
    "CREATE INDEX passkeys_user ON passkeys (user_id)",
    """CREATE TABLE passkey_challenges (
        ticket_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id),
        purpose TEXT NOT NULL,
        state TEXT NOT NULL,
        expires_at {real} NOT NULL
    )""",
    "CREATE INDEX passkey_challenges_expiry ON passkey_challenges (expires_at)",
]
