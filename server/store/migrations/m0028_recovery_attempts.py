"""Device recovery (issue 20): the requests each address made on the recovery routes in the last minute.

The per-address limit of ``/api/v1/enroll/recover*`` was counted in each node's memory, so an address
got its allowance once per node behind the load balancer. Each request now leaves a row here
(server/recovery.py :func:`take_attempt`), counted by every node; rows older than the window are
deleted as new ones come. No secret in it: an address and a time.

Only a new table: code that does not know it runs on as before (with its own per-node limit).
"""

VERSION = 28

STATEMENTS = [
    """CREATE TABLE recovery_attempts (
        peer TEXT NOT NULL,
        at {real} NOT NULL
    )""",
    "CREATE INDEX recovery_attempts_peer ON recovery_attempts (peer, at)",
    "CREATE INDEX recovery_attempts_at ON recovery_attempts (at)",
]
