"""Accounts whose password was generated (created or reset with one) must choose their own at the next login."""

VERSION = 9

STATEMENTS = [
    "ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0",
]
