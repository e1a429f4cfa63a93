"""Device recovery (issue 20, review finding 1): the SHA-256 of every device certificate issued.

Recovery used to compare only the expired leaf's serial with the registry's, and it waives the
issuing intermediate's validity, so whoever kept an OLD intermediate's key could forge a leaf with a
device's (logged) serial and recover it. The server now records each certificate's DER SHA-256 when
it issues it (enrollment, renewal, recovery) and recovery accepts only a leaf whose hash is recorded
for that device and serial (server/recovery.py). Rows of certificates replaced since are deleted at
the next issue.

Only a new table: code that does not know it runs on as before (a certificate issued by such a node
is not recorded, so it cannot be recovered: the device renews on a newer node or enrolls again).
"""

VERSION = 27

STATEMENTS = [
    """CREATE TABLE device_certificate_hashes (
        device_id TEXT NOT NULL,
        serial TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        issued_at {real} NOT NULL,
        PRIMARY KEY (device_id, serial)
    )""",
]
