"""Fleet software search by version (issue 17): ``software.version_key``, bytes whose order is the
dpkg version order (:func:`server.cmdb.versions.key`), so "which devices have X below version Y"
is an index range on ``(name, version_key)`` instead of every row compared in Python.

Filled at ingest; rows stored before this migration keep NULL until the server's start-up pass
(:func:`server.cmdb.software_search.backfill_keys`) fills them, and the search compares those few
in Python meanwhile, so answers are exact throughout.
"""

VERSION = 13

STATEMENTS = [
    "ALTER TABLE software ADD COLUMN version_key {blob}",
    "CREATE INDEX software_name_key ON software (name, version_key)",
]
